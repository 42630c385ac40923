"""The one rule for where a fal key goes, used by every surface that builds a `FalBackend`.

- A key given in code (`api_key=`) goes to every host the caller configured.
- A key from the environment (`FAL_KEY`, or `FAL_KEY_ID` + `FAL_KEY_SECRET`) goes to fal's
  own hosts, and to the host `LLAVA_FAL_BASE_URL` names when that also comes from the
  environment. A `base_url=` (or `queue_url=`...) given in code never gets it: a fal key
  must not leak to a server named in code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from llava_bridge.backends.fal.settings import is_fal_host, origin_of, shown_origin

__all__ = ["BASE_URL_ENV", "KeyRule", "base_url_from_env", "key_from_env", "origin_of", "shown_origin"]

BASE_URL_ENV = "LLAVA_FAL_BASE_URL"

KeySource = Literal["code", "env"]


def key_from_env() -> SecretStr | None:
    """`FAL_KEY`, else `FAL_KEY_ID:FAL_KEY_SECRET`, else None."""
    key = os.environ.get("FAL_KEY", "").strip()
    if key:
        return SecretStr(key)
    key_id = os.environ.get("FAL_KEY_ID", "").strip()
    key_secret = os.environ.get("FAL_KEY_SECRET", "").strip()
    if key_id and key_secret:
        return SecretStr(f"{key_id}:{key_secret}")
    return None


def base_url_from_env() -> str | None:
    """`LLAVA_FAL_BASE_URL`, or None when unset or blank."""
    return os.environ.get(BASE_URL_ENV, "").strip() or None


@dataclass(frozen=True)
class KeyRule:
    """Which key, if any, each host gets; built once per backend by `KeyRule.resolve`."""

    key: SecretStr | None
    key_source: KeySource | None
    """Where `key` came from: `api_key=` in code, or the environment."""
    env_origin: str | None
    """The origin of `LLAVA_FAL_BASE_URL` when the hosts came from it (it may get an env key)."""
    named_in_code: str | None
    """The argument that named hosts in code (``base_url=``...), or None."""

    def __repr__(self) -> str:  # never show the key
        return f"KeyRule(key_source={self.key_source!r}, env_origin={self.env_origin!r})"

    @classmethod
    def resolve(
        cls, api_key: SecretStr | None, *, base_from_env: str | None, named_in_code: str | None
    ) -> KeyRule:
        """The rule for a backend given `api_key=` (or None), the `LLAVA_FAL_BASE_URL` its hosts
        came from (None when they did not), and the argument that named hosts in code."""
        key = api_key if api_key is not None else key_from_env()
        key_source: KeySource | None = None
        if key is not None:
            key_source = "code" if api_key is not None else "env"
        env_origin = origin_of(base_from_env) if base_from_env else None
        return cls(key, key_source, env_origin, named_in_code)

    def sends_key_to(self, url: str) -> bool:
        """Whether a call to `url` carries the key."""
        if self.key is None:
            return False
        if self.key_source == "code" or is_fal_host(url):
            return True
        return self.env_origin is not None and origin_of(url) == self.env_origin

    def authorization(self, url: str) -> str | None:
        """The ``Authorization`` header value for `url`, or None when it gets no key."""
        if self.key is None or not self.sends_key_to(url):
            return None
        return f"Key {self.key.get_secret_value()}"

    def source_of(self, url: str) -> str | None:
        """Where the caller named `url`'s host: ``LLAVA_FAL_BASE_URL``, ``base_url= in code``...;
        None for fal's own hosts."""
        if is_fal_host(url):
            return None
        if self.env_origin == origin_of(url):
            return BASE_URL_ENV
        return f"{self.named_in_code} in code" if self.named_in_code is not None else None

    def refusal_advice(self, url: str) -> str | None:
        """For a 401/403 from `url`: which rule applied and what to pass; None for fal's hosts."""
        if is_fal_host(url):
            return None
        server = f"The server at {shown_origin(url)}"
        source = self.source_of(url)
        if source is not None:
            server += f" (from {source})"
        if self.sends_key_to(url):
            given = "the api_key= given in code" if self.key_source == "code" else "the key from FAL_KEY"
            return (
                f"{server} did not accept {given}; check that it is the key the server was started "
                "with (llava-bridge serve --api-key, or LLAVA_BRIDGE_SERVER_KEY)."
            )
        if self.key is None:
            return (
                f"{server} got no key, and none is set: pass api_key=, or set FAL_KEY together "
                f"with {BASE_URL_ENV} in the environment."
            )
        return (
            f"{server} got no key: an environment key is sent only to fal and to {BASE_URL_ENV}; "
            f"pass api_key=..., or set {BASE_URL_ENV} instead of {self.named_in_code or 'base_url='}."
        )
