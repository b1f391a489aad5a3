"""``python -m patchbay.cli``: the same as ``patchbay`` and ``python -m patchbay``."""

import sys

from patchbay.cli import main

sys.exit(main())
