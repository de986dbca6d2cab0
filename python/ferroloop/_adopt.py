"""ferroloop everywhere in a program: what ``python -m ferroloop`` and ``FERROLOOP_INSTALL`` do.

``_ferroloop_startup`` (run at interpreter start-up by ferroloop_startup.pth, or by
``python -m ferroloop`` in its own process) watches a few imports; ``loaded()`` here is called as
each of those modules finishes executing, and makes the loop it would choose a ferroloop loop:

- ``asyncio``: ferroloop becomes the default loop (``ferroloop.install()``): ``asyncio.run``,
  ``asyncio.Runner`` and ``asyncio.new_event_loop``, so also hypercorn ``-k asyncio``,
  daphne (twisted's asyncioreactor), aiohttp's ``web.run_app`` and pytest-asyncio.
- ``uvicorn.loops.auto`` / ``uvicorn.loops.asyncio``: uvicorn's ``--loop auto`` and
  ``--loop asyncio``, which name ``uvloop.new_event_loop`` and ``asyncio.SelectorEventLoop``
  themselves rather than asking asyncio for its default (uvicorn >= 0.36 has loop factories,
  older versions setup functions; both are replaced).
- ``granian._loops``: granian's ``auto`` (rloop, then uvloop, before asyncio) and ``asyncio``
  entries of its loop registry, through the registry's own ``register``.
- ``uvloop``, ``rloop``, ``zuvloop``: only in mode ``1``, a program's explicit request for one of
  them (``uvloop.new_event_loop``, ``uvloop.run``, ``uvloop.install``, ``uvloop.EventLoopPolicy``,
  so uvicorn ``--loop uvloop``, hypercorn ``-k uvloop``, granian ``--loop uvloop``, anyio's
  ``use_uvloop``) gets ferroloop, and the process says so once on stderr. Their loop classes
  (``uvloop.Loop``) are left alone: code that builds one by hand, or checks for one, gets the
  real thing.

The automatic choices are replaced silently: the program asked for no loop in particular.
"""

from __future__ import annotations

import asyncio
import functools
import sys

import _ferroloop_startup

import ferroloop

ENV = _ferroloop_startup.ENV
MODES = _ferroloop_startup.MODES

# The third-party loop modules, and what each offers that makes its loop.
_LOOP_FACTORIES = ("new_event_loop",)
_POLICY_NAMES = ("EventLoopPolicy", "install")

_noticed: set[str] = set()
_patched: set[str] = set()


def _notice(what: str) -> None:
    """One line on stderr per process and replaced module, the first time it is asked for."""
    module = what.split(".")[0]
    if module in _noticed:
        return
    _noticed.add(module)
    print(
        f"ferroloop: {what} replaced by ferroloop ({ENV}=1, as python -m ferroloop sets; "
        f"{ENV}=defaults keeps {module})",
        file=sys.stderr,
        flush=True,
    )


def activate(mode: str) -> None:
    """Make ferroloop the loop of this process in ``mode`` ("1" or "defaults"), now and in the
    modules it imports later; the environment variable is the caller's business."""
    if mode not in MODES:
        raise ValueError(f"{ENV} mode must be one of {MODES}, not {mode!r}")
    _ferroloop_startup.watch(mode)
    for name in _ferroloop_startup.WATCHED:
        module = sys.modules.get(name)
        # One still executing (its import started before ours) is seen when it ends.
        if module is not None and not getattr(module.__spec__, "_initializing", False):
            loaded(name, module)


def loaded(name: str, module) -> None:
    """Called once ``module`` (one of ``_ferroloop_startup.WATCHED``) has executed."""
    if name in _patched:
        return
    _patched.add(name)
    _PATCHES[name](module)


def _asyncio(module) -> None:
    ferroloop.install()


def _factory_for_uvicorn(use_subprocess: bool = False):
    return ferroloop.new_event_loop


def _setup_for_uvicorn(use_subprocess: bool = False) -> None:
    # uvicorn < 0.36 set a policy up before asyncio.run() instead of passing a factory.
    ferroloop.install()


def _uvicorn_auto(module) -> None:
    module.auto_loop_factory = _factory_for_uvicorn
    if hasattr(module, "auto_loop_setup"):
        module.auto_loop_setup = _setup_for_uvicorn


def _uvicorn_asyncio(module) -> None:
    module.asyncio_loop_factory = _factory_for_uvicorn
    if hasattr(module, "asyncio_setup"):
        module.asyncio_setup = _setup_for_uvicorn


def _granian_loop():
    # As granian's own builders: the loop is also the thread's current one.
    loop = ferroloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def _granian_loops(module) -> None:
    for key in ("auto", "asyncio"):
        module.loops.register(key)(_granian_loop)


def _third_party_loop(module) -> None:
    if _ferroloop_startup.mode != "1":
        return
    name = module.__name__
    for attr in _LOOP_FACTORIES:
        if attr in module.__dict__:
            setattr(module, attr, _replaced_factory(f"{name}.{attr}"))
    if "run" in module.__dict__:
        module.run = _replaced_run(f"{name}.run")
    # uvloop makes these two on first access (module __getattr__) and drops them on 3.16, where
    # asyncio has no policies; __all__ says whether this version offers them.
    offered = set(getattr(module, "__all__", ())) | set(module.__dict__)
    if ferroloop._has_policies():
        if "EventLoopPolicy" in offered:
            module.EventLoopPolicy = _replaced_policy(f"{name}.EventLoopPolicy")
        if "install" in offered:
            module.install = _replaced_install(f"{name}.install")


def _replaced_factory(what: str):
    def new_event_loop(*args, **kwargs):
        _notice(what)
        return ferroloop.new_event_loop()

    return new_event_loop


def _replaced_run(what: str):
    def run(main, *, loop_factory=None, debug=None, **run_kwargs):
        _notice(what)
        # A factory the program passed is its own choice; only the module's default is ours.
        with asyncio.Runner(
            debug=debug, loop_factory=loop_factory or ferroloop.new_event_loop, **run_kwargs
        ) as runner:
            return runner.run(main)

    return run


@functools.cache
def _policy_class():
    base = ferroloop._policy()

    class EventLoopPolicy(base):
        def __init__(self) -> None:
            _notice(self._ferroloop_replaces)
            super().__init__()

    return EventLoopPolicy


def _replaced_policy(what: str):
    return type("EventLoopPolicy", (_policy_class(),), {"_ferroloop_replaces": what})


def _replaced_install(what: str):
    def install() -> None:
        _notice(what)
        ferroloop.install()

    return install


_PATCHES = {
    "asyncio": _asyncio,
    "uvicorn.loops.auto": _uvicorn_auto,
    "uvicorn.loops.asyncio": _uvicorn_asyncio,
    "granian._loops": _granian_loops,
    "uvloop": _third_party_loop,
    "rloop": _third_party_loop,
    "zuvloop": _third_party_loop,
}
