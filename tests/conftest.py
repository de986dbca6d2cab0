"""Shared fixtures for the ferroloop behaviour suite.

Every behavioural test runs twice: once on the stock asyncio selector loop (id
"asyncio", the reference behaviour) and once on ferroloop (id "ferroloop").
ferroloop is imported lazily so that the suite can be exercised with
``-k asyncio`` before the extension is built.  When ferroloop is not importable
the "ferroloop" variants *error* (they are never skipped).

Note: this conftest also sits above tests/conformance/; it defines no autouse
fixtures so that it does not interfere with that suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from versions import DefaultPolicy, get_policy, set_policy

FLAVORS = ["asyncio", "ferroloop"]


@dataclass
class Flavor:
    """Everything a test needs to know about one loop implementation."""

    name: str
    new_event_loop: Callable[[], asyncio.AbstractEventLoop]
    loop_class: type
    policy_class: type
    run: Callable
    install: Callable[[], None]
    # Top-level package the loop's type is expected to come from.
    module: str
    # Snippets for code executed in child interpreters.
    import_code: str
    loop_expr: str
    run_expr: str
    # argv prefix that runs a script (append [script, *args]) or a module
    # (append ["-m", module, *args]) under this flavour.
    main_prefix: list[str] = field(default_factory=list)

    def python_code(self, body: str) -> str:
        """Prefix ``body`` with the imports this flavour needs."""
        return f"import asyncio\n{self.import_code}\n{body}"


def _stock_install() -> None:
    set_policy(DefaultPolicy())


def _make_flavor(name: str) -> Flavor:
    if name == "asyncio":
        return Flavor(
            name="asyncio",
            new_event_loop=asyncio.SelectorEventLoop,
            loop_class=asyncio.SelectorEventLoop,
            policy_class=DefaultPolicy,
            run=asyncio.run,
            install=_stock_install,
            module="asyncio",
            import_code="",
            loop_expr="asyncio.SelectorEventLoop()",
            run_expr="asyncio.run",
            main_prefix=[sys.executable],
        )
    import ferroloop  # lazy on purpose, see module docstring

    return Flavor(
        name="ferroloop",
        new_event_loop=ferroloop.new_event_loop,
        loop_class=ferroloop.Loop,
        # Without the deprecation warning of the public name on 3.14+ (test_python_versions
        # checks that one).
        policy_class=ferroloop._policy(),
        run=ferroloop.run,
        install=ferroloop.install,
        module="ferroloop",
        import_code="import ferroloop",
        loop_expr="ferroloop.new_event_loop()",
        run_expr="ferroloop.run",
        main_prefix=[sys.executable, "-m", "ferroloop"],
    )


@pytest.fixture(params=FLAVORS)
def flavor(request):
    """The loop implementation under test.

    Also snapshots and restores process-global state that a misbehaving loop
    could leak into later tests (policy, current loop, asyncgen hooks,
    coroutine origin tracking, SIGUSR1/SIGUSR2/SIGINT dispositions).
    """
    policy = get_policy()
    hooks = sys.get_asyncgen_hooks()
    depth = sys.get_coroutine_origin_tracking_depth()
    sigs = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)}
    try:
        yield _make_flavor(request.param)
    finally:
        asyncio.set_event_loop(None)
        set_policy(policy)
        asyncio.set_event_loop(None)
        sys.set_asyncgen_hooks(*hooks)
        sys.set_coroutine_origin_tracking_depth(depth)
        for s, h in sigs.items():
            if signal.getsignal(s) is not h and h is not None:
                signal.signal(s, h)
        signal.set_wakeup_fd(-1)


@pytest.fixture
def restore_policy():
    """The event loop policy the test found is put back afterwards."""
    policy = get_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        set_policy(policy)


@contextlib.contextmanager
def _current_loop(lp):
    """``lp`` as the current event loop; unset and closed afterwards."""
    asyncio.set_event_loop(lp)
    try:
        yield lp
    finally:
        asyncio.set_event_loop(None)
        if not lp.is_closed():
            lp.close()


@pytest.fixture
def loop(flavor):
    """A fresh loop of the flavour under test, set as the current event loop."""
    with _current_loop(flavor.new_event_loop()) as lp:
        yield lp


@pytest.fixture
def ferro():
    """A ferroloop loop, set as the current event loop, for tests of ferroloop's own machinery
    (not parametrized over the flavours)."""
    import ferroloop

    with _current_loop(ferroloop.new_event_loop()) as lp:
        yield lp


@pytest.fixture
def new_loop(flavor):
    """Factory for extra loops of the flavour under test (closed at teardown)."""
    made = []

    def factory():
        lp = flavor.new_event_loop()
        made.append(lp)
        return lp

    yield factory
    for lp in made:
        if not lp.is_closed():
            lp.close()


def child_env(extra=None):
    """Environment for child interpreters: ours minus asyncio debug switches and ferroloop's
    start-up switch (a suite run under python -m ferroloop must not turn the stock flavour's
    children into ferroloop ones)."""
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    env.pop("FERROLOOP_INSTALL", None)
    env.pop("FERROLOOP_STATS", None)
    if extra:
        env.update(extra)
    return env


@pytest.fixture
def run_python():
    """``run_python(argv, env=..., cwd=..., timeout=...)`` -> CompletedProcess (text)."""

    def run(args, *, timeout=30, env=None, cwd=None):
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )

    return run


@pytest.fixture
def spawn_python():
    """``spawn_python(argv, ...)`` -> Popen (text, piped); killed at teardown."""
    procs = []

    def spawn(args, *, env=None, cwd=None):
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=child_env(env),
            cwd=cwd,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
