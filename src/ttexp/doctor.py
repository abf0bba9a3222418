"""``python -m ttexp.doctor``: the command lives in :mod:`ttexp.tools.doctor`."""

import sys

from ttexp.tools.doctor import main

if __name__ == "__main__":
    sys.exit(main())
