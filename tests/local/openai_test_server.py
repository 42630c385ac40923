"""An OpenAI-compatible `/v1/chat/completions` server on 127.0.0.1, for tests.

It answers with a `responder(payload) -> str` (by default an echo of the last
user text and the number of images), applies `max_tokens` (in words) and `stop`
like a real server, streams over SSE in HTTP/1.1 chunks when asked (with a usage
chunk when `stream_options.include_usage` is set), and records every request.
Faults are queued with `fail_next(...)`: an error status (with headers and an
OpenAI-style error body), a dropped connection before any answer, a stream
broken midway, a stream that ends cleanly but early (`truncate`), or a slow
answer. `leak_stop_tokens=True` makes it ignore `stop` and append `<|eot_id|>`
and junk, like a server that lets the token through as text.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict[str, Any]], str]


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (timeouts, dropped streams) are expected here, not errors."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Fault:
    """One scripted failure: `status` (an HTTP error), `drop`, `break_stream`, `truncate`,
    `delay`, `unexplained` (a plain-text 500, then the connection closes, as an unhandled
    exception in an ASGI server gives) or `error_event` (a stream whose first event is an
    error given as bare text)."""

    kind: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "injected failure"
    seconds: float = 0.0


def echo(payload: dict[str, Any]) -> str:
    """The default answer: how many images came, and the last user text."""
    images = 0
    last_text = ""
    for message in payload["messages"]:
        content = message["content"]
        if isinstance(content, str):
            text = content
        else:
            images += sum(1 for part in content if part["type"] == "image_url")
            text = " ".join(part["text"] for part in content if part["type"] == "text")
        if message["role"] == "user":
            last_text = text
    return f"I see {images} image(s). You said: {last_text}"


class OpenAITestServer:
    """Run with `with OpenAITestServer() as server:`; `server.base_url` is its root URL."""

    def __init__(self, responder: Responder = echo, *, api_key: str | None = None) -> None:
        self.responder = responder
        self.api_key = api_key
        self.leak_stop_tokens = False
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, kind: str = "status", count: int = 1, **options: Any) -> None:
        with self._lock:
            self._faults.extend(Fault(kind, **options) for _ in range(count))

    def reset(self) -> None:
        """Forget requests, faults and settings, as if just started."""
        with self._lock:
            self.requests.clear()
            self.headers.clear()
            self._faults.clear()
        self.api_key = None
        self.leak_stop_tokens = False

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def __enter__(self) -> OpenAITestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- answering -------------------------------------------------------------------------

    def answer(self, payload: dict[str, Any]) -> tuple[list[str], str, dict[str, int]]:
        """(the answer's pieces, finish_reason, usage) as a real server would make them."""
        text = self.responder(payload)
        words = re.findall(r"\s*\S+", text)
        finish = "stop"
        if len(words) > payload.get("max_tokens", 256):
            words, finish = words[: payload["max_tokens"]], "length"
        if self.leak_stop_tokens:
            words = [*words, "<|eot_id|>", "<|start_header_id|>assistant", " junk"]
        else:
            joined = "".join(words)
            cut = [joined.find(s) for s in payload.get("stop", []) if s and s in joined]
            if cut:
                joined, finish = joined[: min(cut)], "stop"
                words = re.findall(r"\s*\S+|\s+$", joined)
        prompt_words = sum(len(json.dumps(m["content"]).split()) for m in payload["messages"])
        return words, finish, {"prompt_tokens": prompt_words, "completion_tokens": len(words)}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path != "/v1/chat/completions":
                    self._error(404, f"no route {self.path}")
                    return
                payload = json.loads(body)
                with server._lock:
                    server.requests.append(payload)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if (
                    server.api_key is not None
                    and self.headers.get("authorization") != f"Bearer {server.api_key}"
                ):
                    self._error(401, "invalid api key", "authentication_error")
                    return
                fault = server._next_fault()
                if fault is not None and fault.kind == "status":
                    self._error(fault.status, fault.message, "injected", fault.headers)
                    return
                if fault is not None and fault.kind == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None and fault.kind == "delay":
                    time.sleep(fault.seconds)
                if fault is not None and fault.kind == "unexplained":
                    self._plain_500()
                    return
                if fault is not None and fault.kind == "error_event":
                    self._error_event()
                    return
                words, finish, usage = server.answer(payload)
                if payload.get("stream"):
                    cut = (
                        fault.kind
                        if fault is not None and fault.kind in ("break_stream", "truncate")
                        else None
                    )
                    self._stream(payload, words, finish, usage, cut)
                else:
                    self._json(200, _completion(payload, "".join(words), finish, usage))

            def _stream(
                self, payload: dict[str, Any], words: list[str], finish: str, usage: dict[str, int], cut: Any
            ) -> None:
                """SSE in HTTP/1.1 chunks; `cut` breaks the connection or ends early after 3 events."""
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for index, event in enumerate(_events(payload, words, finish, usage)):
                    if cut == "break_stream" and index == 3:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    if cut == "truncate" and index == 3:
                        break
                    data = event.encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def _plain_500(self) -> None:
                data = b"Internal Server Error"
                self.send_response(500)
                self.send_header("content-type", "text/plain; charset=utf-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

            def _error_event(self) -> None:
                data = b'data: {"error": "cannot apply stop strings"}\n\n'
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(
                self, status: int, message: str, kind: str = "invalid_request_error", headers: Any = None
            ) -> None:
                self._json(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

        return Handler


def _completion(payload: dict[str, Any], text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": payload["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
    }


def _events(payload: dict[str, Any], words: list[str], finish: str, usage: dict[str, int]) -> Iterator[str]:
    def event(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> str:
        chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": payload["model"]}
        return f"data: {json.dumps({**chunk, 'choices': choices, **(extra or {})})}\n\n"

    yield ": keep-alive comment\n\n"
    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    for word in words:
        yield event([{"index": 0, "delta": {"content": word}, "finish_reason": None}])
    yield event([{"index": 0, "delta": {}, "finish_reason": finish}])
    if (payload.get("stream_options") or {}).get("include_usage"):
        yield event([], {"usage": {**usage, "total_tokens": sum(usage.values())}})
    yield "data: [DONE]\n\n"
