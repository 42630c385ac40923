"""The recipes of docs/langchain.md, run with offline parts: ChatLlava as an agent's model, and as
one of a model-string app's configurable alternatives."""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import ConfigurableField

from llava_bridge import FakeBackend
from llava_bridge.langchain import ChatLlava

PHOTO = {"type": "image", "url": "https://example.com/cat.jpg"}


def test_chat_llava_as_the_model_of_an_agent_without_tools() -> None:
    backend = FakeBackend("A cat on a sofa.")
    describer = create_agent(model=ChatLlava(backend=backend), system_prompt="Describe the photo.")
    state = describer.invoke(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "What?"}, PHOTO]}]}
    )
    assert state["messages"][-1].content == "A cat on a sofa."
    (request,) = backend.history
    assert request.image is not None and request.image.url == PHOTO["url"]
    assert request.messages[0].role == "system" and request.messages[0].content == "Describe the photo."


def test_chat_llava_as_a_configurable_alternative() -> None:
    other = GenericFakeChatModel(messages=iter([AIMessage("from the default model")]))
    model = other.configurable_alternatives(
        ConfigurableField(id="model"),
        default_key="default",
        llava=ChatLlava(backend=FakeBackend("from LLaVA")),
    )
    message = [{"role": "user", "content": [{"type": "text", "text": "What?"}, PHOTO]}]
    assert model.invoke(message, config={"configurable": {"model": "llava"}}).content == "from LLaVA"
    assert model.invoke(message).content == "from the default model"
