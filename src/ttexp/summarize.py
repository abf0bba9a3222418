"""``python -m ttexp.summarize``: the command lives in :mod:`ttexp.sweeps.summarize`."""

import sys

from ttexp.sweeps.summarize import main

if __name__ == "__main__":
    sys.exit(main())
