"""`python -m unifashion ...` is the `unifashion` command."""

import sys

from unifashion.cli import main

sys.exit(main())
