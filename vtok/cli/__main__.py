"""``python -m vtok.cli``: the same as the ``vtok`` command."""

import sys

from vtok.cli import main

sys.exit(main())
