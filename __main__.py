"""``python -m avlab`` → :mod:`avlab.cli`."""

import sys

from .cli import main

sys.exit(main())
