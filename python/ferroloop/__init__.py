"""ferroloop: asyncio's event loop, rebuilt in Rust.

Use it as uvloop::

    import ferroloop
    ferroloop.run(main())                                    # like asyncio.run
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)    # explicit factory
    ferroloop.install()                                      # policy for asyncio.run & co

or with no code change: ``python -m ferroloop app.py``.
"""

from __future__ import annotations

import asyncio
from asyncio import events as _events

from ._ferroloop import Handle, TimerHandle
from ._loop import Loop

__all__ = ["EventLoopPolicy", "Handle", "Loop", "TimerHandle", "install", "new_event_loop", "run"]
__version__ = "0.1.0"


def new_event_loop() -> Loop:
    """Return a new ferroloop event loop."""
    return Loop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An asyncio event loop policy whose loops are ferroloop loops.

    Derived from the platform's default policy (not the bare base policy) so that the rest of
    its API keeps working, e.g. 3.11's get_child_watcher()/set_child_watcher() on Unix.
    """

    def _loop_factory(self) -> Loop:
        return new_event_loop()


def install() -> None:
    """Make ferroloop the loop of asyncio.run(), asyncio.Runner() and asyncio.new_event_loop()."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Run a coroutine on a new ferroloop loop, as asyncio.run() does on the stock loop."""
    if _events._get_running_loop() is not None:
        # As asyncio.run(): a nested call would deadlock the outer loop.
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
