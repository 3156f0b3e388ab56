"""``python -m platform.tune asl ...``: see ``platform/tune/cli.py``."""

import sys

from platform.tune.cli import main

sys.exit(main())
