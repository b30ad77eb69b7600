"""`python -m bridge`: the dp2bridge command line."""

import sys

from bridge.admin.cli import main

sys.exit(main())
