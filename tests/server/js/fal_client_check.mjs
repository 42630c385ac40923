// fal's JavaScript client (@fal-ai/client) against `llava-bridge serve`, unchanged:
// a request middleware rewrites fal's hosts to the server's layout (queue at the
// root, run under /run, rest under /rest, cdn under /cdn).
//
// Usage: LLAVA_BASE=http://127.0.0.1:PORT LLAVA_KEY=... LLAVA_APP=owner/alias \
//        LLAVA_IMAGE=path/to.png node fal_client_check.mjs
// Prints one JSON object of what each flow saw; tests/server/test_js_client.py checks it.

import { readFile } from "node:fs/promises";
import { ApiError, ValidationError, createFalClient } from "@fal-ai/client";

const base = process.env.LLAVA_BASE;
const app = process.env.LLAVA_APP;
const png = await readFile(process.env.LLAVA_IMAGE);

const HOSTS = [
  ["https://queue.fal.run", base],
  ["https://fal.run", `${base}/run`],
  ["https://rest.fal.ai", `${base}/rest`],
  ["https://v3.fal.media", `${base}/cdn`],
];

function toServer(url) {
  for (const [fal, ours] of HOSTS) {
    if (url === fal || url.startsWith(`${fal}/`) || url.startsWith(`${fal}?`)) {
      return ours + url.slice(fal.length);
    }
  }
  return url;
}

const fal = createFalClient({
  credentials: process.env.LLAVA_KEY,
  requestMiddleware: async (request) => ({ ...request, url: toServer(request.url) }),
});

const seen = {};

// storage upload: the answer is a URL on this server
const imageUrl = await fal.storage.upload(new Blob([png], { type: "image/png" }));
seen.upload = { url: imageUrl };
const input = { image_url: imageUrl, prompt: "What is in the picture?" };

// subscribe with logs
const updates = [];
const subscribed = await fal.subscribe(app, {
  input,
  logs: true,
  onQueueUpdate: (update) => updates.push(update),
});
seen.subscribe = {
  output: subscribed.data.output,
  requestId: subscribed.requestId,
  statuses: [...new Set(updates.map((update) => update.status))],
  logs: updates.flatMap((update) => (update.logs || []).map((line) => line.message)),
};

// queue: submit, status, result, cancel
const submitted = await fal.queue.submit(app, { input });
const firstStatus = await fal.queue.status(app, { requestId: submitted.request_id, logs: true });
await fal.queue.subscribeToStatus(app, { requestId: submitted.request_id });
const result = await fal.queue.result(app, { requestId: submitted.request_id });
const blockers = await Promise.all([1, 2, 3].map(() => fal.queue.submit(app, { input })));
const queued = await fal.queue.submit(app, { input });
await fal.queue.cancel(app, { requestId: queued.request_id });
const cancelledStatus = await fal.queue.status(app, { requestId: queued.request_id });
let cancelCompleted = null;
try {
  await fal.queue.cancel(app, { requestId: submitted.request_id });
} catch (error) {
  cancelCompleted = { name: error.name, status: error.status };
}
seen.queue = {
  requestId: submitted.request_id,
  firstStatus: firstStatus.status,
  resultOutput: result.data.output,
  resultRequestId: result.requestId,
  cancelledStatus: cancelledStatus.status,
  cancelCompleted,
  blockers: blockers.length,
};

// run
const ran = await fal.run(app, { input });
seen.run = { output: ran.data.output, requestId: ran.requestId };

// stream
const stream = await fal.stream(app, { input });
const events = [];
for await (const event of stream) {
  events.push(event);
}
const done = await stream.done();
seen.stream = {
  events: events.length,
  lastPartial: events.at(-1)?.partial,
  doneOutput: done.output,
  requestId: stream.requestId,
};

// a typed 422 with a readable message
try {
  await fal.run(app, { input: { ...input, max_new_tokens: "5" } });
  seen.invalid = null;
} catch (error) {
  seen.invalid = {
    name: error.name,
    isValidationError: error instanceof ValidationError,
    isApiError: error instanceof ApiError,
    status: error.status,
    message: error.message,
    fields: error.fieldErrors.map((field) => field.loc.at(-1)),
  };
}

console.log(JSON.stringify(seen));
