"""CLI errors give CLI advice: flags and arguments, never `pathlib.Path` or `api_key=`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from llava_bridge import (
    ImageInput,
    LlavaError,
    MissingCredentialsError,
    ServerUnreachableError,
    VisionRequest,
)
from llava_bridge.backends._transport.effects import TransportFailure
from llava_bridge.backends.fal.backend import _unreachable_message
from llava_bridge.backends.fal.credentials import KeyRule
from llava_bridge.backends.fal.endpoints import check_endpoint
from llava_bridge.backends.openai_compat import wire
from llava_bridge.cli.main import main
from llava_bridge.cli.messages import cli_message
from llava_bridge.errors import status_error
from llava_bridge.retry import Failure
from tests.fal.fal_test_server import FalTestServer

DATA = Path(__file__).resolve().parents[1] / "data"
PYTHON_ADVICE = (
    "pathlib", "api_key=", "base_url=", "model=", "from_path", "allow_local_paths", "in code", "timeout=",
    "max_response_bytes", "generate()", "quantization=", "device=", "dtype=", "max_new_tokens",
)  # fmt: skip


def _key_rule_advice(api_key: str | None, *, env_key: str | None, base_from_env: bool) -> str:
    """What a 401 from the caller's own server says, under the key rule (credentials.py)."""
    url = "http://gpu-box:8000"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
            patch.delenv(name, raising=False)
        if env_key is not None:
            patch.setenv("FAL_KEY", env_key)
        rule = KeyRule.resolve(
            SecretStr(api_key) if api_key else None,
            base_from_env=url if base_from_env else None,
            named_in_code=None if base_from_env else "base_url=",
        )
    return rule.refusal_advice(url) or ""


def _failure(*, timed_out: bool) -> TransportFailure:
    return TransportFailure(Failure.NOT_SENT, "ConnectError: refused", timed_out=timed_out)


def _raised(make: Callable[[], object]) -> str:
    with pytest.raises(LlavaError) as caught:
        make()
    return str(caught.value)


GPU_BOX = "http://gpu-box:8000"
OAI = "http://gpu-box:8000/v1/chat/completions"
CLI_ADVICE: list[tuple[str, Callable[[], str], str]] = [
    (
        "no key",
        lambda: str(MissingCredentialsError()),
        "No fal API key found: set the FAL_KEY environment variable (or FAL_KEY_ID and FAL_KEY_SECRET), "
        "or pass --api-key.",
    ),
    ("fal refused the key", lambda: str(status_error(401, None)), "HTTP 401. Check FAL_KEY (or --api-key): "),
    (
        "--base-url got no FAL_KEY",
        lambda: _key_rule_advice(None, env_key="k", base_from_env=False),
        "The server at http://gpu-box:8000 (from --base-url) got no key: FAL_KEY is sent only to "
        "fal and to LLAVA_FAL_BASE_URL; set LLAVA_FAL_BASE_URL instead of --base-url, or pass --api-key KEY.",
    ),
    (
        "--base-url, no key at all",
        lambda: _key_rule_advice(None, env_key=None, base_from_env=False),
        "The server at http://gpu-box:8000 (from --base-url) got no key, and none is set: "
        "pass --api-key KEY, or set FAL_KEY together with LLAVA_FAL_BASE_URL in the environment.",
    ),
    (
        "--api-key refused",
        lambda: _key_rule_advice("wrong", env_key=None, base_from_env=False),
        "The server at http://gpu-box:8000 (from --base-url) did not accept the key given with --api-key; ",
    ),
    (
        "FAL_KEY refused by LLAVA_FAL_BASE_URL",
        lambda: _key_rule_advice(None, env_key="k", base_from_env=True),
        "The server at http://gpu-box:8000 (from LLAVA_FAL_BASE_URL) did not accept the key from FAL_KEY; ",
    ),
    (
        "--base-url down",
        lambda: _unreachable_message(
            ServerUnreachableError("x", url=GPU_BOX + "/", reason="refused"), "base_url= in code"
        ),
        "Cannot reach the server at http://gpu-box:8000 (from --base-url): refused. Is it running? "
        "Start one with `llava-bridge serve`, or fix --base-url.",
    ),
    (
        "endpoint not found",
        lambda: str(status_error(404, None, endpoint="fal-ai/gone")),
        "Choose another with --model (e.g. 'fal-ai/llava-next' or 'fal-ai/llavav15-13b').",
    ),
    (
        "not an endpoint id",
        lambda: _raised(lambda: check_endpoint("nope")),
        "--model 'nope' is not a fal endpoint id; use the form 'owner/alias'",
    ),
    (
        "max_new_tokens out of range",
        lambda: _raised(lambda: VisionRequest(prompt="hi", max_new_tokens=0)),
        "--max-new-tokens must be between 1 and ",
    ),
    (
        "temperature out of range",
        lambda: _raised(lambda: VisionRequest(prompt="hi", temperature=-1.0)),
        "--temperature must be between 0 and 2, not -1.0.",
    ),
    (
        "image URL scheme",
        lambda: _raised(lambda: ImageInput.coerce("ftp://x/a.png", allow_paths=True)),
        "For a local file give the file's path as the image argument.",
    ),
    (
        "OpenAI server refused the key",
        lambda: str(wire.error_from_response(401, {}, b'{"error": {"message": "no"}}')),
        "The server did not accept the API key: pass --api-key with the key the server was started with",
    ),
    (
        "OpenAI connect timed out",
        lambda: str(wire.connection_error(_failure(timed_out=True), OAI)),
        "(timed out); is the server running? Try again, or ask for fewer tokens with --max-new-tokens.",
    ),
    (
        "OpenAI answer timed out",
        lambda: str(wire.broken_stream(_failure(timed_out=True), OAI)),
        "timed out (timed out); try again, or ask for fewer tokens with --max-new-tokens.",
    ),
    (
        "a fal-protocol answer that is not one",
        lambda: (
            "the status had no 'status' (HTTP 200); the server may not speak fal's protocol. "
            "Check base_url/model=."
        ),
        "the server may not speak fal's protocol. Check --base-url and --model.",
    ),
    (
        "a body over the cap",
        lambda: (
            "the response body is over 64 bytes; the server sent more than any real answer "
            "(raise max_response_bytes= if it is expected)"
        ),
        "the server sent more than any real answer",
    ),
    (
        "a --stream that broke",
        lambda: (
            "The answer stream from X broke after 3 characters (reset); it was not re-sent. Try again, "
            "or use generate() (the queue survives such breaks)."
        ),
        "Try again, or leave out --stream (the queue survives such breaks).",
    ),
    (
        "serve --quantization without bitsandbytes",
        lambda: (
            "quantization='4bit' needs bitsandbytes (and a CUDA GPU): run pip install "
            "'bitsandbytes>=0.46.1', or pass quantization=None."
        ),
        "--quantization 4bit needs bitsandbytes (and a CUDA GPU): run pip install 'bitsandbytes>=0.46.1', "
        "or leave out --quantization.",
    ),
    (
        "serve --device cuda without CUDA",
        lambda: (
            "device='cuda' but CUDA is not available to torch; install a CUDA build of torch or pass "
            "device='cpu'."
        ),
        "--device cuda but CUDA is not available to torch; install a CUDA build of torch "
        "or pass --device cpu.",
    ),
    (
        "serve --dtype unknown",
        lambda: "dtype='f8' is not a torch dtype; use 'bfloat16', 'float16' or 'float32'.",
        "--dtype f8 is not a torch dtype; use 'bfloat16', 'float16' or 'float32'.",
    ),
    ("nothing to change", lambda: "Nothing to change here.", "Nothing to change here."),
]


@pytest.mark.parametrize(
    ("library", "cli"), [case[1:] for case in CLI_ADVICE], ids=[c[0] for c in CLI_ADVICE]
)
def test_library_advice_becomes_cli_advice(library: Callable[[], str], cli: str) -> None:
    said = cli_message(library())
    assert cli in said, said
    assert not any(advice in said for advice in PYTHON_ADVICE), said


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["ask", str(DATA / "coffee.png"), "hi"], 1, "--api-key"),
        (["ask", "--backend", "fake", "ftp://example.com/a.png", "hi"], 2, "the image argument"),
        (["ask", "--backend", "fake", "missing.png", "hi"], 2, "Cannot read image file 'missing.png'"),
        (["ask", "--backend", "fake", str(Path(__file__)), "hi"], 2, "Not an image"),
        (["ask", "--backend", "fake", str(DATA), "hi"], 2, "is not a file"),
    ],
    ids=["missing key", "bad URL scheme", "missing file", "not an image", "a directory"],
)
def test_cli_errors_are_one_line_of_cli_advice(
    no_key: None, args: list[str], code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llava-bridge: error:"), lines
    assert says in lines[0]
    assert not any(advice in lines[0] for advice in PYTHON_ADVICE), lines[0]


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[FalTestServer]:
    with FalTestServer(require_key="right", job_seconds=0.0) as server:
        yield server


@pytest.mark.parametrize(
    ("flags", "env_key", "says"),
    [
        ([], "right", "(from --base-url) got no key: FAL_KEY is sent only to fal and to LLAVA_FAL_BASE_URL; "
         "set LLAVA_FAL_BASE_URL instead of --base-url, or pass --api-key KEY."),
        (["--api-key", "wrong"], None, "(from --base-url) did not accept the key given with --api-key; "),
        ([], None, "(from --base-url) got no key, and none is set: pass --api-key KEY, or set FAL_KEY"),
    ],
    ids=["FAL_KEY kept from --base-url", "--api-key refused", "no key"],
)  # fmt: skip
def test_a_refused_key_is_explained_in_flags_over_real_http(
    no_key: None,
    keyed_server: FalTestServer,
    flags: list[str],
    env_key: str | None,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if env_key is not None:
        monkeypatch.setenv("FAL_KEY", env_key)
    argv = ["ask", "--base-url", keyed_server.url, *flags, str(DATA / "coffee.png"), "hi"]

    assert main(argv) == 1

    err = capsys.readouterr().err
    assert err.startswith("llava-bridge: error: AuthenticationError: HTTP 401") and says in err, err
    assert not any(advice in err for advice in PYTHON_ADVICE), err
    assert "wrong" not in err and "right" not in err  # no key is ever shown
