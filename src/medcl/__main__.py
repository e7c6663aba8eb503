"""``python -m medcl`` is the ``medcl`` command."""

import sys

from .cli import main

sys.exit(main())
