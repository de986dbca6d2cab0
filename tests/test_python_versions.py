"""What changes with the running Python: a clean import, the policy system (deprecated in 3.14,
gone in 3.16), and asyncio's private methods ferroloop takes by name.

Each test follows the running interpreter's asyncio; the 3.16 case (no policies at all) is played
in a child interpreter whose asyncio has had its policy names taken away.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import warnings

import pytest

pytestmark = pytest.mark.timeout(60)

POLICIES_DEPRECATED = sys.version_info >= (3, 14)


def test_import_is_clean_under_W_error(run_python):
    proc = run_python(
        [sys.executable, "-W", "error", "-c", "import ferroloop; from ferroloop import *"]
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_run_and_loop_are_clean_under_W_error(run_python):
    """Nothing on the common paths touches a deprecated asyncio name (policies,
    asyncio.iscoroutinefunction in debug mode, child watchers)."""
    code = textwrap.dedent(
        """
        import asyncio, ferroloop, sys

        async def main():
            loop = asyncio.get_running_loop()
            loop.call_soon(print, "soon")
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
            await proc.wait()
            await asyncio.sleep(0)
            return "done"

        print(ferroloop.run(main(), debug=True))
        with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
            print(runner.run(main()))
        ferroloop.install()
        print(asyncio.run(main()))
        """
    )
    proc = run_python([sys.executable, "-W", "error", "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["soon", "done"] * 3


def test_policy_attribute(run_python):
    """3.14+: made when asked for, with asyncio's deprecation warning for its policy names;
    before: a plain attribute, no warning."""
    code = textwrap.dedent(
        """
        import asyncio, warnings, ferroloop
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            policy = ferroloop.EventLoopPolicy()
        print(type(policy).__name__, type(policy).__module__)
        for w in caught:
            print(w.category.__name__, w.filename.endswith("<string>"), w.message)
        loop = policy.new_event_loop()
        print(type(loop).__name__)
        loop.close()
        """
    )
    proc = run_python([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "EventLoopPolicy ferroloop"
    assert lines[-1] == "Loop"
    if POLICIES_DEPRECATED:
        assert lines[1:-1] == [
            "DeprecationWarning True 'ferroloop.EventLoopPolicy' is deprecated and slated "
            "for removal in Python 3.16"
        ]
    else:
        assert lines[1:-1] == []


def test_policy_is_not_in_star_import_where_deprecated():
    import ferroloop

    assert ("EventLoopPolicy" in ferroloop.__all__) is not POLICIES_DEPRECATED


def test_install_does_not_warn(restore_policy):
    """install() is ferroloop's own API: the program did not ask for a policy."""
    import ferroloop

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ferroloop.install()
    lp = asyncio.new_event_loop()
    try:
        assert isinstance(lp, ferroloop.Loop)
    finally:
        lp.close()


# An asyncio without policies, as 3.16 has: the names go, and new_event_loop/get_event_loop/
# set_event_loop stop going through a policy.
NO_POLICY_PRELUDE = textwrap.dedent(
    """
    import asyncio, threading
    from asyncio import events, unix_events

    for mod in (asyncio, events, unix_events):
        for name in ("AbstractEventLoopPolicy", "_AbstractEventLoopPolicy",
                     "BaseDefaultEventLoopPolicy", "_BaseDefaultEventLoopPolicy",
                     "DefaultEventLoopPolicy", "_DefaultEventLoopPolicy",
                     "_UnixDefaultEventLoopPolicy", "get_event_loop_policy",
                     "set_event_loop_policy", "_get_event_loop_policy",
                     "_set_event_loop_policy", "_init_event_loop_policy",
                     "_event_loop_policy"):
            mod.__dict__.pop(name, None)
    _local = threading.local()

    def new_event_loop():
        return unix_events.SelectorEventLoop()

    def set_event_loop(loop):
        _local.loop = loop

    def get_event_loop():
        loop = events._get_running_loop() or getattr(_local, "loop", None)
        if loop is None:
            raise RuntimeError("There is no current event loop")
        return loop

    for mod in (asyncio, events):
        mod.new_event_loop = new_event_loop
        mod.set_event_loop = set_event_loop
        mod.get_event_loop = get_event_loop
    assert not hasattr(asyncio, "get_event_loop_policy")
    """
)


def _no_policy_child(run_python, body, *args):
    code = NO_POLICY_PRELUDE + textwrap.dedent(body)
    return run_python([sys.executable, "-W", "error", "-c", code, *args])


def test_without_policies_run_runner_install(run_python):
    proc = _no_policy_child(
        run_python,
        """
        import ferroloop

        async def main():
            return type(asyncio.get_running_loop()).__name__

        print(ferroloop.run(main()))
        with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
            print(runner.run(main()))
        print(asyncio.run(main()))  # not installed yet: the stock loop
        ferroloop.install()
        print(asyncio.run(main()))
        with asyncio.Runner() as runner:
            print(runner.run(main()))
        loop = asyncio.new_event_loop()
        print(type(loop).__name__)
        loop.close()
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "Loop",
        "Loop",
        "_UnixSelectorEventLoop",
        "Loop",
        "Loop",
        "Loop",
    ]


def test_without_policies_policy_attribute_is_a_clear_error(run_python):
    proc = _no_policy_child(
        run_python,
        """
        import ferroloop
        try:
            ferroloop.EventLoopPolicy
        except AttributeError as exc:
            print("AttributeError:", exc)
        try:
            from ferroloop import EventLoopPolicy
        except ImportError as exc:
            print("ImportError")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith("AttributeError: ferroloop.EventLoopPolicy needs asyncio's event loop")
    assert "ferroloop.run()" in first and "ferroloop.install()" in first
    assert second == "ImportError"


def test_without_policies_python_m_ferroloop(run_python, tmp_path):
    """``python -m ferroloop app.py`` puts ferroloop behind asyncio.run in such an asyncio."""
    app = tmp_path / "app.py"
    app.write_text(
        "import asyncio\n"
        "async def main():\n"
        "    return type(asyncio.get_running_loop()).__module__\n"
        "print(asyncio.run(main()))\n"
    )
    proc = _no_policy_child(
        run_python,
        """
        import runpy, sys
        sys.argv = ["ferroloop", sys.argv[1]]  # run_module makes argv[0] ferroloop's path
        runpy.run_module("ferroloop", run_name="__main__", alter_sys=True)
        """,
        str(app),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ferroloop._loop\n"


def test_borrowed_asyncio_methods_exist():
    """Every method ferroloop takes from asyncio by name is there on this Python, and what it
    was taken from still defines it (a rename upstream must fail here, not in a user's
    program)."""
    from asyncio import base_events

    import ferroloop
    from ferroloop import _net, _unix

    for table in (_net._BORROWED, _unix._BORROWED):
        for cls, names in table.items():
            for name in names:
                assert name in cls.__dict__, f"{cls.__qualname__}.{name} is gone"
                assert getattr(ferroloop.Loop, name) is cls.__dict__[name]
    # Taken with some of their module's names pointed at ferroloop's classes: still the running
    # version's code.
    for name in ("start_tls", "_sendfile_fallback"):
        ours = getattr(ferroloop.Loop, name)
        assert ours.__code__ is base_events.BaseEventLoop.__dict__[name].__code__


def test_private_asyncio_names_ferroloop_calls_exist():
    """The private helpers of asyncio that the borrowed methods and ferroloop's own Python
    reach by name."""
    from asyncio import base_events, constants, futures, selector_events, sslproto, trsock

    for module, name in [
        (base_events, "_set_nodelay"),
        (base_events, "_SendfileFallbackProtocol"),
        (base_events, "_format_handle"),
        (base_events, "Server"),
        (constants, "_SendfileMode"),
        (constants, "SSL_HANDSHAKE_TIMEOUT"),
        (constants, "SSL_SHUTDOWN_TIMEOUT"),
        (constants, "DEBUG_STACK_DEPTH"),
        (futures, "_set_result_unless_cancelled"),
        (futures, "_get_loop"),
        (selector_events, "_SelectorDatagramTransport"),
        (sslproto, "SSLProtocol"),
        (sslproto, "_SSLProtocolTransport"),
        (trsock, "TransportSocket"),
    ]:
        assert hasattr(module, name), f"{module.__name__}.{name} is gone"
