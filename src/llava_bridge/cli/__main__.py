"""`python -m llava_bridge.cli`: the same as `llava-bridge`."""

import sys

from llava_bridge.cli.main import main

sys.exit(main())
