"""``python -m ttexp.bench``: the command lives in :mod:`ttexp.tools.bench`."""

import sys

from ttexp.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
