"""``python -m ttexp.compare``: the command lives in :mod:`ttexp.tools.compare`."""

import sys

from ttexp.tools.compare import main

if __name__ == "__main__":
    sys.exit(main())
