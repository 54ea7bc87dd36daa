"""`python -m suite.cli` runs the `hybridbench` command."""

import sys

from suite.cli import main

sys.exit(main())
