"""``python -m notellm2_pl``: see notellm2_pl.cli."""

import sys

from notellm2_pl.cli import main

if __name__ == "__main__":
    sys.exit(main())
