"""Property tests: the parsers and the renderer never crash on hostile input."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from llava_bridge import ContextOverflowError, ImageInput, InvalidImageError, Message, VisionRequest
from llava_bridge.images import decode_data_uri, sniff_mime_type
from llava_bridge.prompts import fit_to_context, render_llama3, render_single_prompt

roles = st.sampled_from(["system", "user", "assistant"])
texts = st.text(max_size=200)


@settings(deadline=None)  # a first TIFF or HEIC case loads that Pillow plugin: slow once, on a busy machine
@given(st.binary(max_size=2048))
def test_sniffer_and_validator_only_raise_typed_errors(data: bytes) -> None:
    kinds = ["jpeg", "png", "webp", "gif", "bmp", "tiff", "heic", "heif", "avif"]
    assert sniff_mime_type(data) in {None, *(f"image/{kind}" for kind in kinds)}
    try:
        image = ImageInput.from_bytes(data)
        assert image.size is not None and image.size[0] > 0
        image.prepared()
    except InvalidImageError:
        return


@given(st.text(max_size=300))
def test_data_uri_parser_only_raises_typed_errors(text: str) -> None:
    for candidate in (text, "data:" + text, "data:image/png;base64," + text):
        try:
            ImageInput.from_url(candidate)
        except InvalidImageError:
            pass


@given(st.binary(max_size=256), st.sampled_from(["image/png", "image/jpeg", "", "text/plain"]))
def test_data_uri_decoding_round_trips_bytes(data: bytes, mime: str) -> None:
    uri = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    declared, decoded = decode_data_uri(uri)
    assert decoded == data
    assert declared == (mime or None)


@settings(max_examples=150)
@given(
    st.lists(st.tuples(roles, texts), min_size=0, max_size=8),
    st.text(min_size=1, max_size=300).filter(str.strip),
    st.integers(min_value=1, max_value=4096),
    st.booleans(),
)
def test_renderer_and_budget_hold_their_invariants(
    history: list[tuple[str, str]], latest: str, max_new_tokens: int, with_image: bool
) -> None:
    messages = [Message(role=r, content=t) for r, t in history] + [Message(role="user", content=latest)]  # type: ignore[arg-type]
    request = VisionRequest(
        messages=messages,
        image="https://example.com/a.png" if with_image else None,
        max_new_tokens=max_new_tokens,
    )
    try:
        fitted, budget = fit_to_context(request)
    except ContextOverflowError as exc:
        assert exc.needed > exc.available
        return
    assert fitted.messages[-1] == request.messages[-1]
    assert [m for m in request.messages if m.role == "system"] == [
        m for m in fitted.messages if m.role == "system"
    ]
    assert budget.prompt_tokens + max_new_tokens <= budget.context_window
    rendered = render_llama3(fitted.messages, fitted.image_index)
    assert rendered.count("<image>\n") >= (1 if fitted.image is not None else 0)
    assert rendered.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert render_single_prompt(fitted.messages).endswith(latest)
