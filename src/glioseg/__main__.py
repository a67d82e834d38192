"""``python -m glioseg`` is the ``glioseg`` command."""

import sys

from glioseg.cli import main

sys.exit(main())
