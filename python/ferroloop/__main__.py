"""``python -m ferroloop script.py [args...]`` / ``python -m ferroloop -m module [args...]``.

Runs an unmodified asyncio program with ferroloop behind asyncio.run(), asyncio.Runner() and
asyncio.new_event_loop(), the way ``python script.py`` / ``python -m module`` would run it:
the same sys.argv, ``__name__ == "__main__"``, sys.path[0] and exit status.
"""

from __future__ import annotations

import os
import runpy
import sys

USAGE = "usage: python -m ferroloop script.py [args...] | -m module [args...]"


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        raise SystemExit(2 if not argv else 0)

    import ferroloop

    ferroloop.install()
    if argv[0] == "-m":
        if len(argv) < 2:
            print("ferroloop: -m needs a module name\n" + USAGE, file=sys.stderr)
            raise SystemExit(2)
        # As `python -m`: sys.path[0] is the current directory.
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        path = argv[0]
        if not os.path.exists(path):
            # As `python missing.py`: a one-line message and exit status 2.
            print(
                f"{sys.executable}: can't open file {os.path.abspath(path)!r}: "
                "[Errno 2] No such file or directory",
                file=sys.stderr,
            )
            raise SystemExit(2)
        sys.argv = list(argv)
        # As `python script.py`: sys.path[0] is the directory of the script, symlinks resolved.
        sys.path[0] = os.path.dirname(os.path.realpath(path))
        runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
