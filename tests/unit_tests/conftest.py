"""Unit tests of the LangChain adapters run with network sockets disabled (unix sockets allowed)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_socket

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        pytest_socket.enable_socket()


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return (DATA / "coffee.png").read_bytes()


@pytest.fixture(scope="session")
def png_b64(png_bytes: bytes) -> str:
    return base64.b64encode(png_bytes).decode("ascii")


@pytest.fixture(scope="session")
def jpeg_bytes() -> bytes:
    return (DATA / "rocket.jpg").read_bytes()
