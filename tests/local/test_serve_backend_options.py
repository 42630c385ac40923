"""`llava-bridge serve`'s upstream and local-model flags: each reaches its backend, and a
flag for another backend, or a bad value, stops the server before it starts (one line)."""

from __future__ import annotations

import pytest

from llava_bridge.backends.factory import make_backend
from llava_bridge.backends.openai_compat.backend import OpenAICompatBackend
from llava_bridge.errors import ConfigurationError

pytest.importorskip("fastapi")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "fake", "--no-upstream-stop"], "--no-upstream-stop only apply to --backend openai"),
        (
            ["--backend", "fal", "--upstream-timeout", "5"],
            "--upstream-timeout only apply to --backend openai",
        ),
        (["--backend", "openai", "--max-batch-size", "4"], "--max-batch-size only apply to --backend local"),
        (["--backend", "fake", "--local-files-only"], "--local-files-only only apply to --backend local"),
        (
            ["--backend", "openai", "--base-url", "http://127.0.0.1:9", "--upstream-extra-body", "{seed: 1}"],
            "--upstream-extra-body is not valid JSON",
        ),
        (
            ["--backend", "openai", "--base-url", "http://127.0.0.1:9", "--upstream-extra-body", "[1]"],
            "--upstream-extra-body must be a JSON object",
        ),
        (
            ["--backend", "openai", "--base-url", "http://127.0.0.1:9", "--upstream-timeout", "0"],
            "total_timeout must be a positive number",
        ),
    ],
)
def test_misplaced_or_bad_flags_stop_the_server_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from llava_bridge.server.cli import main

    assert main(["--port", "0", *argv]) == 2  # a flag that cannot work is a usage error
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1


def test_the_upstream_flags_reach_the_openai_backend() -> None:
    backend = make_backend(
        "openai",
        base_url="http://127.0.0.1:9",
        upstream_extra_body='{"stop_token_ids": [128009]}',
        upstream_stop=False,
        upstream_timeout=30.0,
    )
    assert isinstance(backend, OpenAICompatBackend)
    settings = backend._settings
    assert settings.extra_body == {"stop_token_ids": [128009]}
    assert not settings.stop_support.sending and settings.total_timeout == 30.0
    with pytest.raises(ConfigurationError, match="--upstream-extra-body"):
        make_backend("local", upstream_extra_body={"seed": 1})


def test_the_local_flags_reach_transformers_backend(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import argparse

    from llava_bridge.server.cli import _ready_backend, add_serve_arguments

    args = add_serve_arguments(argparse.ArgumentParser()).parse_args(
        ["--backend", "local", "--model", "/nonexistent/llava", "--local-files-only", "--max-batch-size", "0"]
    )
    with pytest.raises(ConfigurationError, match="max_batch_size must be a positive integer"):
        _ready_backend(args)


def test_the_upstream_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from llava_bridge import VisionRequest

    from .openai_test_server import OpenAITestServer

    with OpenAITestServer(api_key="sk-upstream") as upstream:
        monkeypatch.setenv("VLLM_KEY", "sk-upstream")
        backend = make_backend("openai", base_url=upstream.base_url, upstream_key_env="VLLM_KEY")
        with backend:
            assert backend.generate(VisionRequest(prompt="hi")).text
        assert "sk-upstream" not in repr(backend)
        monkeypatch.delenv("VLLM_KEY")
        with pytest.raises(ConfigurationError, match="export VLLM_KEY="):
            make_backend("openai", base_url=upstream.base_url, upstream_key_env="VLLM_KEY")
    with pytest.raises(ConfigurationError, match="--upstream-key-env only apply to --backend openai"):
        make_backend("fake", upstream_key_env="VLLM_KEY")
