"""`python -m jaxreg` runs the command line (see jaxreg.cli)."""

import sys

from jaxreg.cli import main

sys.exit(main())
