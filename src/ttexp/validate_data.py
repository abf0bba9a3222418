"""``python -m ttexp.validate_data``: the command lives in :mod:`ttexp.tools.validate_data`."""

import sys

from ttexp.tools.validate_data import main

if __name__ == "__main__":
    sys.exit(main())
