"""``python -m taskorbit``: the ``taskorbit`` command (docs/cli.md)."""

import sys

from taskorbit.cli.main import main

sys.exit(main())
