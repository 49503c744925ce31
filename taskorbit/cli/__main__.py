"""``python -m taskorbit.cli``: how the supervisor starts its worker processes."""

import sys

from taskorbit.cli.main import main

sys.exit(main())
