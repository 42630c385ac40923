"""Clear errors when an optional extra is not installed."""

from __future__ import annotations

import importlib.util

__all__ = ["install_hint", "require_extra"]


def require_extra(extra: str, *modules: str, what: str) -> None:
    """Raise ImportError saying which extra to install when any of `modules` is missing."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            raise ImportError(
                f"{what} needs the [{extra}] extra ({module} is not installed): {install_hint(extra)}",
                name=module,
            )


def install_hint(extra: str) -> str:
    """The command that installs `extra` from a clone of llava-bridge, for error messages."""
    return f'pip install -e ".[{extra}]" (from a clone of llava-bridge)'
