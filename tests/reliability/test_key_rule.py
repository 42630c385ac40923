"""One key rule on every surface, over real HTTP to a fal-protocol server on 127.0.0.1.

A key from the environment goes to fal and to `LLAVA_FAL_BASE_URL` (also from the
environment); a `base_url=` given in code gets only an `api_key=` given in code.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from llava_bridge import AuthenticationError, FalBackend, ImageInput, VisionRequest
from tests.fal.fal_test_server import FalTestServer

SERVER_KEY = "team-key-0123"
CANARY = "fal-canary-must-not-leave-9876"
KEY_VARIABLES = ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL")


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (20, 120, 220)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png()
DATA_URI = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"

Surface = Callable[[dict[str, Any], Path], str]
"""Ask one question through a surface, built with the given base_url=/api_key= (if any)."""


def fal_backend(options: dict[str, Any], _: Path) -> str:
    with FalBackend(**options) as backend:
        return backend.generate(VisionRequest(prompt="What?", image=ImageInput.from_bytes(PNG))).text


def chat_llava(options: dict[str, Any], _: Path) -> str:
    from langchain_core.messages import HumanMessage

    from llava_bridge.langchain import ChatLlava

    message = HumanMessage(
        content=[{"type": "text", "text": "What?"}, {"type": "image_url", "image_url": {"url": DATA_URI}}]
    )
    return str(ChatLlava(**options).invoke([message]).content)


def image_tool(options: dict[str, Any], _: Path) -> str:
    from llava_bridge.langchain import LlavaImageTool

    return str(LlavaImageTool(**options).invoke({"image": DATA_URI, "question": "What?"}))


def image_loader(options: dict[str, Any], folder: Path) -> str:
    from llava_bridge.langchain import LlavaImageLoader

    (folder / "photo.png").write_bytes(PNG)
    loader = LlavaImageLoader(folder / "photo.png", on_error="raise", **options)
    return loader.load()[0].page_content


def llava_llm(options: dict[str, Any], _: Path) -> str:
    from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock

    from llava_bridge.llama_index import LlavaLLM

    message = ChatMessage(role=MessageRole.USER, blocks=[ImageBlock(image=PNG), TextBlock(text="What?")])
    return str(LlavaLLM(**options).chat([message]).message.content)


def tool_spec(options: dict[str, Any], _: Path) -> str:
    from llava_bridge.llama_index import LlavaToolSpec

    return LlavaToolSpec(**options).ask_about_image(question="What?", image=DATA_URI)


def image_describer(options: dict[str, Any], _: Path) -> str:
    from llama_index.core.schema import ImageNode

    from llava_bridge.llama_index import ImageDescriber

    node = ImageNode(image=base64.b64encode(PNG).decode(), metadata={"image_id": "square.png"})
    return ImageDescriber(on_error="raise", **options)([node])[0].get_content()


def _cli(argv: list[str], options: dict[str, Any]) -> str:
    from llava_bridge.cli.main import main

    if "base_url" in options:
        argv += ["--base-url", options["base_url"]]
    if "api_key" in options:
        argv += ["--api-key", options["api_key"]]
    code = main(argv)
    if code != 0:
        raise CliFailed(code)
    return ""


class CliFailed(Exception):
    """The CLI exited non-zero (its message went to stderr)."""


def cli_ask(options: dict[str, Any], folder: Path) -> str:
    (folder / "photo.png").write_bytes(PNG)
    return _cli(["ask", str(folder / "photo.png"), "What?"], options)


def cli_describe(options: dict[str, Any], folder: Path) -> str:
    (folder / "photo.png").write_bytes(PNG)
    out = folder / "out.jsonl"
    _cli(["describe", str(folder / "photo.png"), "--out", str(out)], options)
    return out.read_text()


SURFACES: dict[str, Surface] = {
    "FalBackend": fal_backend,
    "ChatLlava": chat_llava,
    "LlavaImageTool": image_tool,
    "LlavaImageLoader": image_loader,
    "LlavaLLM": llava_llm,
    "LlavaToolSpec": tool_spec,
    "ImageDescriber": image_describer,
    "cli ask": cli_ask,
    "cli describe": cli_describe,
}
CLI_SURFACES = {"cli ask", "cli describe"}


def _cli_takes_api_key() -> bool:
    from llava_bridge.cli.main import _parser

    _, unknown = _parser().parse_known_args(["ask", "photo.png", "What?", "--api-key", "k"])
    return not unknown


@pytest.fixture(scope="module")
def server() -> Iterator[FalTestServer]:
    with FalTestServer(job_seconds=0.0) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(server: FalTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset(job_seconds=0.0)
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def authorizations(server: FalTestServer) -> list[str | None]:
    """The Authorization header of every request the server got (None: none sent)."""
    assert server.requests, "the surface sent nothing to the server"
    return [request.headers.get("authorization") for request in server.requests]


@pytest.fixture(params=sorted(SURFACES))
def surface(request: pytest.FixtureRequest) -> tuple[str, Surface]:
    name: str = request.param
    if name in {"ChatLlava", "LlavaImageTool", "LlavaImageLoader"}:
        pytest.importorskip("langchain_core")
    if name in {"LlavaLLM", "LlavaToolSpec", "ImageDescriber"}:
        pytest.importorskip("llama_index.core")
    return name, SURFACES[name]


def test_a_key_from_the_environment_reaches_the_server_the_environment_names(
    surface: tuple[str, Surface], server: FalTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.reset(job_seconds=0.0, require_key=SERVER_KEY)
    monkeypatch.setenv("LLAVA_FAL_BASE_URL", server.url)
    monkeypatch.setenv("FAL_KEY", SERVER_KEY)
    surface[1]({}, tmp_path)
    assert set(authorizations(server)) <= {f"Key {SERVER_KEY}", None}
    assert f"Key {SERVER_KEY}" in authorizations(server)
    assert [job.status for job in server.jobs.values()] == ["COMPLETED"]


def test_a_key_id_and_secret_from_the_environment_reach_it_too(
    server: FalTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.reset(job_seconds=0.0, require_key="id-1:secret-2")
    monkeypatch.setenv("LLAVA_FAL_BASE_URL", server.url + "/")
    monkeypatch.setenv("FAL_KEY_ID", "id-1")
    monkeypatch.setenv("FAL_KEY_SECRET", "secret-2")
    assert "48x32" in fal_backend({}, tmp_path)


def test_an_environment_key_never_reaches_a_base_url_given_in_code(
    surface: tuple[str, Surface], server: FalTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAL_KEY", CANARY)
    surface[1]({"base_url": server.url}, tmp_path)
    assert authorizations(server) == [None] * len(server.requests)
    assert all(CANARY.encode() not in request.body for request in server.requests)


def test_an_api_key_given_in_code_reaches_a_base_url_given_in_code(
    surface: tuple[str, Surface], server: FalTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if surface[0] in CLI_SURFACES and not _cli_takes_api_key():
        pytest.skip("the CLI has no --api-key yet")
    server.reset(job_seconds=0.0, require_key=SERVER_KEY)
    monkeypatch.setenv("FAL_KEY", CANARY)
    surface[1]({"base_url": server.url, "api_key": SERVER_KEY}, tmp_path)
    assert f"Key {SERVER_KEY}" in authorizations(server)
    assert f"Key {CANARY}" not in authorizations(server)


def test_an_environment_base_url_does_not_open_other_hosts_named_in_code(
    server: FalTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """LLAVA_FAL_BASE_URL names the server the env key may go to, not any server on the same host."""
    monkeypatch.setenv("LLAVA_FAL_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("FAL_KEY", CANARY)
    fal_backend({"base_url": server.url}, tmp_path)
    assert authorizations(server) == [None] * len(server.requests)


def test_a_refusal_by_a_server_named_in_code_says_which_rule_applied(
    server: FalTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.reset(job_seconds=0.0, require_key=SERVER_KEY)
    monkeypatch.setenv("FAL_KEY", CANARY)
    with pytest.raises(AuthenticationError) as caught:
        fal_backend({"base_url": server.url}, tmp_path)
    message = str(caught.value)
    assert f"The server at {server.url} (from base_url= in code) got no key" in message
    assert "sent only to fal and to LLAVA_FAL_BASE_URL" in message and "api_key=" in message
    assert CANARY not in message and CANARY not in repr(caught.value)


def test_a_refusal_of_the_environment_key_by_the_environment_server_says_so(
    server: FalTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.reset(job_seconds=0.0, require_key=SERVER_KEY)
    monkeypatch.setenv("LLAVA_FAL_BASE_URL", server.url)
    monkeypatch.setenv("FAL_KEY", CANARY)
    with pytest.raises(AuthenticationError) as caught:
        fal_backend({}, tmp_path)
    message = str(caught.value)
    assert "(from LLAVA_FAL_BASE_URL) did not accept the key from FAL_KEY" in message
    assert CANARY not in message


def test_no_key_at_all_for_the_environment_server_says_what_to_set(
    server: FalTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.reset(job_seconds=0.0, require_key=SERVER_KEY)
    monkeypatch.setenv("LLAVA_FAL_BASE_URL", server.url)
    with pytest.raises(
        AuthenticationError, match="got no key, and none is set: pass api_key=, or set FAL_KEY"
    ):
        fal_backend({}, tmp_path)


async def test_the_async_path_explains_a_refusal_too(
    server: FalTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.reset(job_seconds=0.0, require_key=SERVER_KEY)
    monkeypatch.setenv("FAL_KEY", CANARY)
    async with FalBackend(base_url=server.url) as backend:
        with pytest.raises(AuthenticationError, match=r"\(from base_url= in code\) got no key"):
            await backend.agenerate(VisionRequest(prompt="What?", image=ImageInput.from_bytes(PNG)))
    assert authorizations(server) == [None] * len(server.requests)
