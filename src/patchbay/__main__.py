"""``python -m patchbay``: the CLI."""

import sys

from patchbay.cli import main

sys.exit(main())
