"""Whether a server accepts the `stop` field: some fail on it (`transformers serve` with a
LLaVA processor answers HTTP 500), and stop strings are cut on the client anyway."""

from __future__ import annotations

import logging
import threading

__all__ = ["StopSupport"]

logger = logging.getLogger("llava_bridge.openai_compat")


class StopSupport:
    """`send_stop` as a backend learns it: True (always send `stop`), False (never), or None
    (send it; after a server error on a request that carried it, try once without it, and
    when that works, stop sending it to this backend's server)."""

    __slots__ = ("_lock", "_send")

    def __init__(self, send: bool | None = None) -> None:
        self._send = send
        self._lock = threading.Lock()

    @property
    def sending(self) -> bool:
        """Whether the next request carries `stop`."""
        return self._send is not False

    @property
    def learning(self) -> bool:
        """Whether a server error on a request with `stop` is tried once more without it."""
        return self._send is None

    def refused(self, url: str) -> None:
        """The server failed with `stop` and answered without it: leave it out from now on."""
        with self._lock:
            if self._send is not None:
                return
            self._send = False
        logger.warning(
            "The server at %s failed on a request with 'stop' and answered without it; "
            "stop strings are now cut on the client only (pass send_stop=False, or "
            "--no-upstream-stop to llava-bridge serve, to skip the failing first try).",
            url,
        )

    def __repr__(self) -> str:
        return f"StopSupport(send={self._send!r})"
