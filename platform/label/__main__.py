"""``python -m platform.label posts.csv ...``: see ``platform/label/cli.py``."""

import sys

from platform.label.cli import main

sys.exit(main())
