"""A known fake key, driven through every path: it must appear in none of the captured output.

Paths: errors (their str, repr, args and attributes), DEBUG logs (llava_bridge, httpx,
httpcore), reprs of backends, adapters and settings, LangChain `dumpd`/`dumps` and the
tracing callbacks, LlamaIndex `to_dict`/`to_json`/pickle, `llava-bridge --verbose ask`,
and a server started with `--api-key` (its logs and error bodies).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from bench.fault_proxy import FaultProxy
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import dumpd, dumps
from langchain_core.messages import HumanMessage
from langchain_core.tracers.context import collect_runs

from llava_bridge import FalBackend, ImageInput, LlavaError, VisionRequest
from llava_bridge.langchain import ChatLlava, LlavaImageTool
from llava_bridge.llama_index import LlavaLLM
from llava_bridge.server.settings import ServerSettings
from tests.reliability.conftest import APP, FAKE_ANSWER, GOOD_URI, png
from tests.support.local_server import LocalServer, running_server

KEY = "fal-key-7c1e9a7b-LEAKCHECK:0a1b2c3d4e5f60718293"
"""The server's key, which the clients also use."""
WRONG_KEY = "fal-key-0000dead-WRONGKEY:ffeeddccbbaa99887766"
"""A key the server does not accept."""
ROOT = Path(__file__).resolve().parents[2]


def assert_no_key(*captured: Any) -> None:
    for item in captured:
        text = item if isinstance(item, str) else repr(item)
        for key in (KEY, WRONG_KEY):
            assert key not in text, f"a key leaked into: {text[:300]}"
            assert key.split(":")[1] not in text, f"the key's secret half leaked into: {text[:300]}"


def error_text(exc: BaseException) -> str:
    """Everything an error carries: message, repr, args, attributes, cause and context."""
    parts = [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            parts.append(error_text(linked))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalServer]:
    """A server that requires KEY, logging at DEBUG."""
    with running_server("--backend", "fake", "--api-key", KEY, "--log-level", "debug") as server:
        yield server


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture every logger at DEBUG, httpx and httpcore included."""
    names = ("", "llava_bridge", "httpx", "httpcore", "langchain_core", "llama_index")
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''} {getattr(r, 'stack_info', '') or ''}"
        for r in caplog.records
    )


def _request() -> VisionRequest:
    return VisionRequest(prompt="What is it?", image=ImageInput.from_bytes(png()))


def test_fal_backend_through_faults_errors_and_retries(
    guarded: LocalServer, debug_logs: pytest.LogCaptureFixture
) -> None:
    captured: list[Any] = []
    with FaultProxy(guarded.port, fault_rate=0.5, stall_s=0.2, seed=7) as proxy:
        backend = FalBackend(api_key=KEY, base_url=proxy.url, status_stream=False)
        outcomes: Counter[str] = Counter()
        for _ in range(12):  # half the calls fail: retries, ambiguous submits, typed errors
            try:
                result = backend.generate(_request())
                outcomes["ok"] += 1
                captured.append(result.model_dump_json())
            except LlavaError as exc:
                outcomes[type(exc).__name__] += 1
                captured.append(error_text(exc))
        captured += [repr(backend), str(backend), repr(backend._ctx()), repr(backend._ctx().config)]

        async def async_path() -> None:
            async with FalBackend(api_key=KEY, base_url=proxy.url) as async_backend:
                for _ in range(4):
                    try:
                        captured.append(await async_backend.agenerate(_request()))
                    except LlavaError as exc:
                        captured.append(error_text(exc))

        asyncio.run(async_path())
        backend.close()
    assert outcomes["ok"] >= 1 and sum(outcomes.values()) == 12
    with FalBackend(api_key=KEY, base_url=guarded.base_url) as direct:
        handle = direct.submit(_request())
        captured += [repr(handle), handle.status(), handle.result(), handle.cancel()]
    wrong = FalBackend(api_key=WRONG_KEY, base_url=guarded.base_url)
    with pytest.raises(LlavaError, match="401") as raised:
        wrong.generate(_request())
    captured += [error_text(raised.value), repr(wrong)]
    logs = log_text(debug_logs)
    assert "retry" in logs  # the DEBUG retry lines were captured
    assert_no_key(logs, *captured)


def test_fal_key_from_the_environment(monkeypatch: pytest.MonkeyPatch, guarded: LocalServer) -> None:
    monkeypatch.setenv("FAL_KEY", KEY)
    backend = FalBackend()
    captured: list[Any] = [repr(backend), repr(backend._ctx()), repr(backend._ctx().config)]
    settings = ServerSettings(api_key=KEY, db_path=":memory:")  # type: ignore[arg-type]
    captured += [repr(settings), str(settings)]
    # an env key is not sent to a server of your own: the guarded server says 401, without the key
    with pytest.raises(LlavaError, match="401") as raised:
        FalBackend(base_url=guarded.base_url).generate(_request())
    captured.append(error_text(raised.value))
    assert_no_key(*captured)


class Recorder(BaseCallbackHandler):
    """Keeps everything LangChain hands to tracing callbacks."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def _keep(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append(json.dumps([args, kwargs], default=repr))

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, **kwargs: Any) -> None:
        self._keep("chat_model_start", serialized, messages, **kwargs)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        self._keep("llm_start", serialized, prompts, **kwargs)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._keep("llm_end", response, run_id=run_id, **kwargs)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._keep("llm_error", error_text(error), run_id=run_id, **kwargs)

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, **kwargs: Any) -> None:
        self._keep("tool_start", serialized, input_str, **kwargs)

    def on_tool_end(self, output: Any, **kwargs: Any) -> None:
        self._keep("tool_end", output, **kwargs)

    def on_tool_error(self, error: BaseException, **kwargs: Any) -> None:
        self._keep("tool_error", error_text(error), **kwargs)


def test_langchain_serialization_and_tracing(
    monkeypatch: pytest.MonkeyPatch, guarded: LocalServer, debug_logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("FAL_KEY", raising=False)
    chat = ChatLlava(api_key=KEY, base_url=guarded.base_url, max_retries=1)
    tool = LlavaImageTool(api_key=KEY, base_url=guarded.base_url)
    captured: list[Any] = [
        repr(chat),
        str(chat),
        dumpd(chat),
        dumps(chat),
        dumps(chat, pretty=True),
        chat.model_dump(),
        chat.model_dump_json(),
        chat._identifying_params,
        chat._get_ls_params(),
        repr(tool),
        dumpd(tool),
        dumps(tool),
        tool.model_dump(),
        tool.tool_call_schema.model_json_schema(),
    ]
    recorder = Recorder()
    message = HumanMessage(content=[{"type": "image", "url": GOOD_URI}, {"type": "text", "text": "What?"}])
    with collect_runs() as runs:
        answer = chat.invoke([message], config={"callbacks": [recorder], "metadata": {"case": "ok"}})
        assert answer.content == FAKE_ANSWER
        streamed = "".join(str(c.content) for c in chat.stream([message], config={"callbacks": [recorder]}))
        assert streamed == FAKE_ANSWER
        tool_answer = tool.invoke({"image": GOOD_URI, "question": "What?"}, config={"callbacks": [recorder]})
        captured.append(tool_answer)
        wrong = ChatLlava(api_key=WRONG_KEY, base_url=guarded.base_url, max_retries=0)
        with pytest.raises(LlavaError) as raised:
            wrong.invoke([message], config={"callbacks": [recorder]})
        captured += [error_text(raised.value), dumps(wrong)]
        with pytest.raises(LlavaError) as tool_raised:  # an auth failure is not the agent's to fix
            LlavaImageTool(api_key=WRONG_KEY, base_url=guarded.base_url).invoke(
                {"image": GOOD_URI, "question": "What?"}, config={"callbacks": [recorder]}
            )
        captured.append(error_text(tool_raised.value))
    assert any("chat_model_start" in seen for seen in recorder.seen)
    assert any("tool_start" in seen for seen in recorder.seen)
    captured += recorder.seen
    captured += [
        run.model_dump_json() if hasattr(run, "model_dump_json") else run.json() for run in runs.traced_runs
    ]
    assert_no_key(log_text(debug_logs), *captured)


def test_llama_index_serialization(guarded: LocalServer, debug_logs: pytest.LogCaptureFixture) -> None:
    llm = LlavaLLM(api_key=KEY, base_url=guarded.base_url)
    captured: list[Any] = [repr(llm), str(llm), llm.to_dict(), llm.to_json(), llm.model_dump(), llm.metadata]
    captured.append(llm.complete("What is it?").text)  # text-only: the placeholder image
    try:
        captured.append(pickle.dumps(llm))
    except Exception as exc:  # refusing to pickle is fine, as long as the refusal does not show the key
        captured.append(error_text(exc))
    try:
        captured.append(pickle.dumps(llm.backend))
    except Exception as exc:
        captured.append(error_text(exc))
    assert_no_key(log_text(debug_logs), *captured)


def test_cli_verbose_ask(guarded: LocalServer, tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(png())
    env = {**os.environ, "FAL_KEY": KEY, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "llava_bridge.cli", "--verbose", "ask", str(image), "What is it?"]
    # the env key is not sent to a server of your own, so the guarded one refuses: the error path
    refused = subprocess.run(
        [*command, "--backend", "fal", "--base-url", guarded.base_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 1 and "401" in refused.stderr
    with running_server("--backend", "fake") as open_server:
        answered = subprocess.run(
            [*command, "--backend", "fal", "--base-url", open_server.base_url, "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert answered.returncode == 0, answered.stderr
    assert "DEBUG" in answered.stderr  # --verbose did log
    assert_no_key(refused.stdout, refused.stderr, answered.stdout, answered.stderr)


def test_server_with_an_api_key_keeps_it_out_of_logs_and_answers(guarded: LocalServer) -> None:
    bodies: list[str] = []
    base = guarded.base_url
    attempts = [
        {},
        {"Authorization": f"Key {WRONG_KEY}"},
        {"Authorization": f"Key {KEY}x"},
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": KEY},
    ]
    for headers in attempts:
        response = httpx.post(f"{base}/{APP}", json={"image_url": GOOD_URI, "prompt": "?"}, headers=headers)
        assert response.status_code == 401
        bodies.append(response.text + repr(response.headers))
    ok = httpx.post(
        f"{base}/run/{APP}",
        json={"image_url": GOOD_URI, "prompt": "?"},
        headers={"Authorization": f"Key {KEY}"},
    )
    assert ok.status_code == 200
    bad = httpx.post(
        f"{base}/run/{APP}",
        json={"image_url": "file:///x", "prompt": "?"},
        headers={"Authorization": f"Key {KEY}"},
    )
    assert bad.status_code == 422
    token = httpx.post(f"{base}/rest/storage/auth/token", headers={"Authorization": f"Key {KEY}"}, json={})
    bodies += [ok.text, bad.text, token.text, httpx.get(f"{base}/openapi.json").text]
    assert_no_key(guarded.stderr_text(), *bodies)
