"""``python -m ttexp.import_config``: the command lives in :mod:`ttexp.tools.import_config`."""

import sys

from ttexp.tools.import_config import main

if __name__ == "__main__":
    sys.exit(main())
