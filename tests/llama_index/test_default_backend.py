"""With no backend given, the adapters use FalBackend: configured, keyless until used, secret-safe."""

from __future__ import annotations

import base64
import pickle

import pytest
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.schema import ImageNode

from llava_bridge import ConfigurationError, FalBackend, MissingCredentialsError
from llava_bridge.llama_index import ImageDescriber, LlavaLLM, LlavaToolSpec, identify_images

from .conftest import colour_png, data_uri

SECRET = "sk-do-not-leak-4711"


@pytest.fixture(autouse=True)
def no_fal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_default_is_fal_with_the_llava_llama3_endpoint() -> None:
    for component in (LlavaLLM(), ImageDescriber(), LlavaToolSpec()):
        assert isinstance(component.backend, FalBackend)
        assert component.backend.model_name == "fal-ai/llava-llama3-8b-v11"
    assert LlavaLLM(model="fal-ai/llava-next").metadata.model_name == "fal-ai/llava-next"
    assert ImageDescriber(model="fal-ai/llava-next").model_name == "fal-ai/llava-next"


def test_missing_key_is_reported_at_the_first_call_not_before() -> None:
    llm = LlavaLLM()  # constructing needs no key
    with pytest.raises(MissingCredentialsError, match="set the FAL_KEY environment variable"):
        llm.chat([ChatMessage(role=MessageRole.USER, content="Hi")])
    with pytest.raises(MissingCredentialsError):
        LlavaToolSpec().describe_image(data_uri(colour_png("red")))


async def test_missing_key_stops_the_describer_at_once() -> None:
    nodes = identify_images(
        [ImageNode(image=base64.b64encode(colour_png(name)).decode()) for name in ("red", "navy", "lime")]
    )
    with pytest.raises(MissingCredentialsError):
        ImageDescriber(on_error="keep")(nodes)
    with pytest.raises(MissingCredentialsError):
        await ImageDescriber(on_error="keep").acall(nodes)


def test_the_key_appears_nowhere() -> None:
    llm = LlavaLLM(api_key=SECRET, timeout=5, max_retries=1)
    describer = ImageDescriber(api_key=SECRET)
    tools = LlavaToolSpec(api_key=SECRET)
    for text in (
        repr(llm),
        str(llm.to_dict()),
        llm.to_json(),
        repr(describer),
        describer.to_json(),
        repr(tools),
    ):
        assert SECRET not in text
    with pytest.raises(ConfigurationError) as caught:
        pickle.dumps(llm)
    assert SECRET not in str(caught.value)


def test_fal_settings_are_checked_by_the_backend() -> None:
    with pytest.raises(ConfigurationError, match="max_retries"):
        LlavaLLM(max_retries=-1)
