"""`python -m llava_bridge.server`: the same as `llava-bridge serve`."""

from __future__ import annotations

import sys

from llava_bridge.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
