"""``python -m ferroloop script.py [args...]`` / ``python -m ferroloop -m module [args...]``.

Runs an unmodified program the way ``python script.py`` / ``python -m module`` would (the same
sys.argv, ``__name__ == "__main__"``, sys.path[0] and exit status), with ferroloop as its event
loop everywhere: see HELP, and ``ferroloop._adopt`` for how each server's choice is reached.
"""

from __future__ import annotations

import os
import runpy
import sys

USAGE = (
    "usage: python -m ferroloop [--stats] script.py [args...] | [--stats] -m module [args...]"
    " | --version | --help"
)

HELP = f"""\
{USAGE}

Runs a Python program as `python script.py` or `python -m module` would (same sys.argv,
__main__, sys.path[0] and exit status), with ferroloop as its asyncio event loop everywhere:

  - asyncio.run(), asyncio.Runner() and asyncio.new_event_loop() make ferroloop loops;
  - a server's automatic and "asyncio" loop choices run on ferroloop: uvicorn --loop auto and
    --loop asyncio, hypercorn -k asyncio, granian --loop auto and --loop asyncio, daphne,
    aiohttp's web.run_app(), pytest-asyncio;
  - an explicit request for another loop (uvloop, rloop, zuvloop: uvicorn --loop uvloop,
    uvloop.run(), uvloop.install(), loop_factory=uvloop.new_event_loop, ...) gets ferroloop
    too, and the process says so in one line on stderr;
  - worker processes follow: forked ones inherit this, and the program's environment gets
    FERROLOOP_INSTALL=1, which a start-up hook installed with ferroloop honours in every Python
    interpreter of this installation (multiprocessing's spawn and forkserver, hypercorn -w N,
    uvicorn --workers N, granian's workers).

--stats prints a summary of each event loop on stderr when the program exits: busy ratio,
iterations, callbacks, bytes, callback duration and loop lag percentiles, the slowest callbacks
with their tasks. It sets FERROLOOP_STATS=1, so worker processes report too (timing is on in
every loop: a clock read per callback).

Environment:
  FERROLOOP_INSTALL=1         all of the above (what python -m ferroloop sets when unset)
  FERROLOOP_INSTALL=defaults  ferroloop only where the stock loop would run: a program's
                              explicit request for uvloop, rloop or zuvloop is kept
  FERROLOOP_INSTALL=0         ferroloop behind asyncio's defaults in this process only; servers'
                              own choices and new interpreters are left alone
  FERROLOOP_STATS=1           what --stats does, in any process whose loops are ferroloop's

The hook does nothing in interpreters started with -S or -I (no site-packages start-up)."""

_MODES = ("1", "defaults", "0")


def main(argv: list[str]) -> None:
    if not argv:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    if argv[0] in ("-h", "--help"):
        print(HELP)
        raise SystemExit(0)
    if argv[0] == "--stats":
        argv = argv[1:]
        if not argv:
            print(USAGE, file=sys.stderr)
            raise SystemExit(2)
        # Read by every ferroloop loop as it is made, here and in worker processes.
        os.environ["FERROLOOP_STATS"] = "1"

    import ferroloop

    if argv[0] == "--version":
        print(f"ferroloop {ferroloop.__version__} (Python {sys.version.split()[0]})")
        raise SystemExit(0)

    mode = os.environ.get("FERROLOOP_INSTALL") or "1"
    if mode not in _MODES:
        print(
            f"ferroloop: FERROLOOP_INSTALL={mode!r} not understood (1, defaults or 0)\n{USAGE}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if mode == "0":
        ferroloop.install()
    else:
        from ferroloop import _adopt

        os.environ["FERROLOOP_INSTALL"] = mode
        _adopt.activate(mode)

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
