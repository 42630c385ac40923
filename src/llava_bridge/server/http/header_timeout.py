"""Dropping clients that never finish their request headers (slowloris).

uvicorn arms its keep-alive timer only after a response; a connection that sends
nothing, or half a request line, is never timed out, and the ASGI app cannot see
it (there is no request yet). So the guard sits in uvicorn's HTTP protocol object:
`with_header_timeout(protocol_class, seconds)` subclasses it so that a connection
whose next request's headers have not all arrived `seconds` after it opened, or
after the first byte of that request, is closed. Headers are complete when uvicorn
starts the request's cycle, which both of its HTTP implementations (httptools, h11)
keep in `self.cycle`; only that attribute and the asyncio protocol methods are used.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["with_header_timeout"]


def with_header_timeout(base: type[asyncio.Protocol], seconds: float) -> type[asyncio.Protocol]:
    """`base` (a uvicorn HTTP protocol class) with the header timeout of the module docstring."""

    class HeaderTimeoutProtocol(base):  # type: ignore[valid-type,misc]
        _header_timer: asyncio.TimerHandle | None = None
        _armed_for: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            cycle = getattr(self, "cycle", None)
            between = cycle is None or getattr(cycle, "response_complete", True)
            if between and (self._header_timer is None or cycle is not self._armed_for):
                self._arm()  # the first byte of a new request: its headers are on the clock
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = getattr(self, "cycle", None)
            self._header_timer = asyncio.get_running_loop().call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if getattr(self, "cycle", None) is self._armed_for:  # no new request started since
                transport = getattr(self, "transport", None)
                if transport is not None and not transport.is_closing():
                    transport.close()

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{base.__name__}"
    HeaderTimeoutProtocol.__qualname__ = HeaderTimeoutProtocol.__name__
    return HeaderTimeoutProtocol
