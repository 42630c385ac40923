"""`/v1/chat/completions` in front of `--backend local` (a tiny random-weight LLaVA), greedy:
the image reaches the model, and the streamed answer and usage equal the whole one."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.server.conftest import APP
from tests.support.local_server import running_server

pytestmark = pytest.mark.slow


def test_tiny_local_model_answers_the_same_whole_and_streamed(tmp_path: Path, data_uri: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llava_bridge.testing import build_tiny_llava

    model_dir = build_tiny_llava(tmp_path / "tiny-llava")
    messages = [
        {"role": "system", "content": "w1 w2"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "w3 w4"},
                {"type": "image_url", "image_url": {"url": data_uri}},
            ],
        },
    ]
    with (
        running_server("--backend", "local", "--model", str(model_dir), timeout=120) as server,
        openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=90) as sdk,
    ):
        whole = sdk.chat.completions.create(model=APP, messages=messages, max_tokens=6, temperature=0)  # type: ignore[arg-type]
        text_only = sdk.chat.completions.create(
            model=APP,
            messages=[messages[0], {"role": "user", "content": "w3 w4"}],  # type: ignore[list-item]
            max_tokens=6,
            temperature=0,
        )
        chunks = list(
            sdk.chat.completions.create(
                model=APP,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=6,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == whole.choices[0].message.content
    assert whole.usage is not None and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert 1 <= whole.usage.completion_tokens <= 6
    assert (
        text_only.usage is not None and whole.usage.prompt_tokens > text_only.usage.prompt_tokens
    )  # the image
    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1]
    assert finish == whole.choices[0].finish_reason
