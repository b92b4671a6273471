"""``python -m freight``: the command line, as the ``freight`` command runs it."""

import sys

from freight.cli.main import main

sys.exit(main())
