"""``python -m notellm2_pl``: see notellm2_pl.commands.main."""

import sys

from notellm2_pl.commands.main import main

if __name__ == "__main__":
    sys.exit(main())
