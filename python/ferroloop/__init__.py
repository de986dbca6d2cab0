"""ferroloop: asyncio's event loop, rebuilt in Rust.

Use it as uvloop::

    import ferroloop
    ferroloop.run(main())                                    # like asyncio.run
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)    # explicit factory
    ferroloop.install()                                      # asyncio.run & co use ferroloop

or with no code change: ``python -m ferroloop app.py``.

asyncio's policy system is deprecated in Python 3.14 and goes away in 3.16. Importing ferroloop
never touches it; ``ferroloop.EventLoopPolicy`` is made the first time it is asked for (with
asyncio's deprecation warning on 3.14 and 3.15), and ``install()`` works on every version.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from asyncio import events as _events

from ._ferroloop import Handle, TimerHandle
from ._loop import Loop
from ._metrics import Histogram, LoopMetrics, SlowCallback

__version__ = "0.1.0"

# 3.14 deprecates the policies (their public names warn); 3.16 removes them.
_POLICIES_DEPRECATED = sys.version_info >= (3, 14)

__all__ = [
    "Handle",
    "Histogram",
    "Loop",
    "LoopMetrics",
    "SlowCallback",
    "TimerHandle",
    "install",
    "new_event_loop",
    "run",
]
if not _POLICIES_DEPRECATED:
    # Not where it is deprecated: `from ferroloop import *` must not warn.
    __all__.insert(0, "EventLoopPolicy")


def new_event_loop() -> Loop:
    """Return a new ferroloop event loop."""
    return Loop()


def _has_policies() -> bool:
    # Looked up at each call: a test can take the names away to play an asyncio without them.
    return hasattr(
        _events, "_get_event_loop_policy" if _POLICIES_DEPRECATED else "get_event_loop_policy"
    )


_policy_class = None


def _policy() -> type:
    """The policy class, made on first use from the platform's default policy, reached
    without the deprecation warning of its public name."""
    global _policy_class
    if _policy_class is None:
        if not _has_policies():
            raise AttributeError(
                "ferroloop.EventLoopPolicy needs asyncio's event loop policies, which this "
                f"Python ({sys.version.split()[0]}) no longer has; use ferroloop.run(), "
                "asyncio.Runner(loop_factory=ferroloop.new_event_loop) or ferroloop.install()"
            )
        if _POLICIES_DEPRECATED:
            from asyncio import unix_events

            base = unix_events._DefaultEventLoopPolicy
        else:
            base = asyncio.DefaultEventLoopPolicy

        class EventLoopPolicy(base):
            """An asyncio event loop policy whose loops are ferroloop loops.

            Derived from the platform's default policy (not the bare base policy) so that the
            rest of its API keeps working, e.g. 3.11's get_child_watcher()/set_child_watcher().
            """

            def _loop_factory(self) -> Loop:
                return new_event_loop()

        EventLoopPolicy.__module__ = __name__
        EventLoopPolicy.__qualname__ = "EventLoopPolicy"
        _policy_class = EventLoopPolicy
    return _policy_class


if not _POLICIES_DEPRECATED and _has_policies():
    EventLoopPolicy = _policy()


def __getattr__(name: str):
    if name == "EventLoopPolicy":
        cls = _policy()
        if _POLICIES_DEPRECATED:
            # asyncio's own warning for its policy names, pointing at the user's line.
            warnings._deprecated(f"ferroloop.{name}", remove=(3, 16))
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install() -> None:
    """Make ferroloop the loop of asyncio.run(), asyncio.Runner() and asyncio.new_event_loop().

    Where asyncio has policies (up to 3.15) this sets ferroloop's policy, so code that asks the
    policy for a loop gets one of ours too; on 3.14 and 3.15 it does so without the
    deprecation warning of ``asyncio.set_event_loop_policy``, since the program did not ask for
    a policy. Where it has none, it replaces ``asyncio.new_event_loop``, which is what
    ``asyncio.run()`` and ``asyncio.Runner()`` call when given no loop factory.
    """
    if _has_policies():
        if _POLICIES_DEPRECATED:
            _events._set_event_loop_policy(_policy()())
        else:
            asyncio.set_event_loop_policy(_policy()())
        return
    _events.new_event_loop = new_event_loop
    asyncio.new_event_loop = new_event_loop


def run(main, *, debug=None):
    """Run a coroutine on a new ferroloop loop, as asyncio.run() does on the stock loop."""
    if _events._get_running_loop() is not None:
        # As asyncio.run(): a nested call would deadlock the outer loop.
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


# Under python -m ferroloop's start-up hook, the asyncio this package imported arrived before the
# package could install itself: the hook kept it for now.
if "_ferroloop_startup" in sys.modules:
    sys.modules["_ferroloop_startup"].flush()
