"""`python -m synthembed <stage> ...`: see synthembed.cli."""

import sys

from synthembed.cli import main

sys.exit(main())
