"""``python -m ttexp.bench``: the command lives in :mod:`ttexp.tools.bench`;
``python -m ttexp.bench --startup`` (start-up to the first step) in :mod:`ttexp.tools.startup`."""

import sys

if __name__ == "__main__":
    if "--startup" in sys.argv[1:]:  # without importing torch here: the runs are timed alone
        from ttexp.tools.startup import main as startup_main

        sys.exit(startup_main([a for a in sys.argv[1:] if a != "--startup"]))
    from ttexp.tools.bench import main

    sys.exit(main())
