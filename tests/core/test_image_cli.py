"""`llava-bridge ask` with phone photos and several images, against the real server (in a thread)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llava_bridge import FakeBackend
from llava_bridge.cli.main import main
from tests.support.images import encode, marked_upright, sideways_photo

from .test_image_orientation import assert_upright

pytest.importorskip("fastapi", reason="needs the [server] extra")
from llava_bridge.server.background import BackgroundServer


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeBackend]]:
    fake = FakeBackend.image_facts()
    with BackgroundServer(fake) as running:
        yield running.url, fake


@pytest.fixture
def photos(tmp_path: Path) -> list[str]:
    paths = []
    for index, data in enumerate(
        [sideways_photo(), sideways_photo("PNG", orientation=3), *[encode(marked_upright())] * 3]
    ):
        path = tmp_path / f"photo{index}.{'png' if index % 2 else 'jpg'}"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def ask(server: tuple[str, FakeBackend], *args: str) -> int:
    url, _ = server
    return main(["ask", *args, "--backend", "fal", "--base-url", url, "--api-key", "test", "--json"])


def test_a_portrait_phone_photo_is_asked_about_upright(
    server: tuple[str, FakeBackend], photos: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert ask(server, photos[0], "What is this?") == 0
    assert "A 60x80 image" in json.loads(capsys.readouterr().out)["text"]
    got = server[1].history[-1].image
    assert got is not None and got.orientation == 1
    assert_upright(got.to_pil())


def test_two_images_are_sent_as_one_grid_of_upright_tiles(
    server: tuple[str, FakeBackend], photos: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert ask(server, photos[0], photos[1], "Which is larger?") == 0
    assert "A 672x336 image" in json.loads(capsys.readouterr().out)["text"]
    got = server[1].history[-1].image
    assert got is not None
    grid = got.to_pil()
    for left in (0, 336):
        assert_upright(grid.crop((left + 138, 128, left + 198, 208)))


def test_multi_image_last_sends_only_the_last(
    server: tuple[str, FakeBackend], photos: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert ask(server, photos[0], photos[1], "What is this?", "--multi-image", "last") == 0
    capsys.readouterr()
    got = server[1].history[-1].image
    assert got is not None and got.size == (60, 80)  # one image, not a grid
    assert_upright(got.to_pil())


def test_five_images_name_the_flag(
    server: tuple[str, FakeBackend], photos: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    calls = len(server[1].history)
    assert ask(server, *photos, "Compare them") == 2
    err = capsys.readouterr().err
    assert "--multi-image first" in err and "multi_image=" not in err
    assert len(server[1].history) == calls
