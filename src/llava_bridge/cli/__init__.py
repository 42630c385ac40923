"""The `llava-bridge` command: ask, describe, serve, demo."""

from llava_bridge.cli.main import main

__all__ = ["main"]
