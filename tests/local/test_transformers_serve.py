"""OpenAICompatBackend against `transformers serve`: an OpenAI-compatible server no one
here wrote, run as a subprocess on a free 127.0.0.1 port with the tiny LLaVA (saved with
its chat template), stopped after the module.

That server fails on the `stop` field with a LLaVA processor (HTTP 500, then it drops the
connection; a stream sends an error event). The backend learns to leave `stop` out, or is
told to (`send_stop=False`); either way its answers are token for token those of
TransformersBackend on the same weights.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llava_bridge import Message, ServerError, VisionRequest, VisionResult
from llava_bridge.backends.openai_compat.backend import OpenAICompatBackend

from .conftest import colour_image

START_TIMEOUT = 180.0
"""Seconds `transformers serve` may take to load the tiny model on a busy machine."""

IMAGE = VisionRequest(prompt="w1 w2 w3", image=colour_image(0), max_new_tokens=12)
CHAT = VisionRequest(
    messages=(
        Message(role="system", content="w6"),
        Message(role="user", content="w1 w2"),
        Message(role="assistant", content="w3"),
        Message(role="user", content="w4"),
    ),
    image=colour_image(3),
    max_new_tokens=10,
)
TEXT = VisionRequest(prompt="w4 w5", max_new_tokens=8)
REQUESTS = {"image": IMAGE, "chat": CHAT, "text": TEXT}


def _serve_command() -> list[str]:
    executable = Path(sys.executable).with_name("transformers")
    if not executable.exists():
        pytest.skip("the `transformers` command is not installed next to this Python")
    for module in ("fastapi", "uvicorn"):
        pytest.importorskip(module, reason=f"`transformers serve` needs {module} (transformers[serving])")
    return [str(executable), "serve"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LLaVA with our Llama-3 image chat template saved beside its processor."""
    from transformers import AutoProcessor

    from llava_bridge.backends.local.template import LLAMA3_IMAGE_CHAT_TEMPLATE

    directory = tmp_path_factory.mktemp("served") / "tiny-llava"
    shutil.copytree(tiny_dir, directory)
    processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
    processor.chat_template = LLAMA3_IMAGE_CHAT_TEMPLATE
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def server_url(served_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`transformers serve` with the tiny model forced, on 127.0.0.1; stopped after the module."""
    command = _serve_command()
    port = _free_port()
    log = (tmp_path_factory.mktemp("serve-log") / "serve.log").open("w+b")
    process = subprocess.Popen(
        [*command, str(served_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Any) -> None:
    ends = time.monotonic() + START_TIMEOUT
    while time.monotonic() < ends:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"transformers serve exited ({process.returncode}):\n{log.read()[-3000:].decode()}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"transformers serve did not answer within {START_TIMEOUT:g} s")


@pytest.fixture(scope="module")
def local(served_dir: Path) -> Iterator[Any]:
    from llava_bridge.backends.local.backend import TransformersBackend

    backend = TransformersBackend(str(served_dir), local_files_only=True, max_batch_size=1, batch_wait_ms=0)
    yield backend
    backend.close()


def _backend(url: str, served_dir: Path, **options: Any) -> OpenAICompatBackend:
    return OpenAICompatBackend(url, model=str(served_dir), **options)


def _essentials(result: VisionResult) -> tuple[str, int, int, str | None]:
    return result.text, result.usage.prompt_tokens, result.usage.completion_tokens, result.finish_reason


def test_stop_is_learned_once_and_every_answer_comes_back(
    server_url: str, served_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="llava_bridge.openai_compat"),
        _backend(server_url, served_dir) as backend,
    ):
        first = backend.generate(IMAGE)
        again = [backend.generate(IMAGE) for _ in range(2)]
    learned = [r for r in caplog.records if "failed on a request with 'stop'" in r.getMessage()]
    assert len(learned) == 1
    assert first.text and [_essentials(r) for r in again] == [_essentials(first)] * 2


def test_a_stream_learns_from_the_error_event(server_url: str, served_dir: Path) -> None:
    with _backend(server_url, served_dir) as backend:
        chunks = list(backend.stream(IMAGE))
        result = chunks[-1].result
        assert result is not None and result.text
        assert "".join(c.delta for c in chunks) == result.text


def test_sending_stop_regardless_gives_the_servers_error_and_the_next_call_still_connects(
    server_url: str, served_dir: Path
) -> None:
    with _backend(server_url, served_dir, send_stop=True, max_retries=0) as backend:
        for _ in range(3):  # the server drops its connection after each 500
            with pytest.raises(ServerError):
                backend.generate(TEXT)


async def test_async_paths_learn_too(server_url: str, served_dir: Path) -> None:
    async with _backend(server_url, served_dir) as backend:
        result = await backend.agenerate(IMAGE)
        chunks = [chunk async for chunk in backend.astream(CHAT)]
    assert result.text and chunks[-1].result is not None


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_token_for_token_the_same_as_transformers_backend(
    server_url: str, served_dir: Path, local: Any, name: str
) -> None:
    request = REQUESTS[name]
    expected = local.generate(request)
    with _backend(server_url, served_dir, send_stop=False) as backend:
        served = backend.generate(request)
        chunks = list(backend.stream(request))
    assert _essentials(served) == _essentials(expected)
    streamed = chunks[-1].result
    assert streamed is not None and streamed.text == expected.text
    assert "".join(c.delta for c in chunks) == expected.text


async def test_token_for_token_async(server_url: str, served_dir: Path, local: Any) -> None:
    expected = await local.agenerate(CHAT)
    async with _backend(server_url, served_dir, send_stop=False) as backend:
        served = await backend.agenerate(CHAT)
        streamed = "".join([chunk.delta async for chunk in backend.astream(CHAT)])
    assert _essentials(served) == _essentials(expected)
    assert streamed == expected.text


def test_serve_backend_openai_in_front_of_transformers_serve(
    server_url: str, served_dir: Path, local: Any
) -> None:
    """`llava-bridge serve --backend openai` with the upstream flags, end to end."""
    from tests.support.local_server import running_server

    expected = local.generate(IMAGE)
    image = IMAGE.image
    assert image is not None
    flags = ("--no-upstream-stop", "--upstream-extra-body", '{"seed": 1}', "--upstream-timeout", "120")
    with running_server(
        "--backend", "openai", "--base-url", server_url, "--model", str(served_dir), *flags, timeout=120
    ) as served:
        answer = httpx.post(
            f"{served.base_url}/run/fal-ai/llava-llama3-8b-v11",
            json={"image_url": image.to_data_uri(), "prompt": IMAGE.prompt, "max_new_tokens": 12},
            timeout=120,
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == expected.text
