"""`--fake-answers` picks what the fake backend behind the server says."""

from __future__ import annotations

import pytest

from llava_bridge import ConfigurationError, FakeBackend, VisionRequest
from llava_bridge.backends.factory import make_backend


def shout(request: VisionRequest) -> str:
    return request.prompt.upper()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("canned", "This is a fake answer from FakeBackend."),
        ("image-facts", "(fake) There is no image. You said: hi"),
        ("tests.cli.test_fake_answers:shout", "HI"),
    ],
)
def test_fake_answers(spec: str, expected: str) -> None:
    backend = make_backend("fake", fake_answers=spec)
    assert isinstance(backend, FakeBackend)
    assert backend.generate(VisionRequest(prompt="hi")).text == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "use 'canned'"),
        ("no_such_module_xyz:answer", "cannot be imported"),
        ("tests.cli.test_fake_answers:missing", "cannot be imported"),
        ("tests.cli.test_fake_answers:pytest", "not a function"),
    ],
)
def test_bad_fake_answers_are_configuration_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_backend("fake", fake_answers=spec)
