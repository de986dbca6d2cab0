"""Integration entry points: the loop class, the policy, install(), run(), asyncio.Runner.

For the "asyncio" id the equivalents are the stock SelectorEventLoop,
DefaultEventLoopPolicy, asyncio.run and setting the default policy.
"""

import asyncio
import sys
import threading

import pytest
from versions import POLICIES_DEPRECATED, AbstractPolicy, get_policy

pytestmark = pytest.mark.timeout(15)


def test_loop_is_abstract_event_loop(loop, flavor):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(loop, flavor.loop_class)
    assert type(loop).__module__.split(".")[0] == flavor.module


def test_new_event_loop_returns_distinct_loops(flavor):
    a = flavor.new_event_loop()
    b = flavor.new_event_loop()
    try:
        assert a is not b
        assert not a.is_closed() and not b.is_closed()
    finally:
        a.close()
        b.close()


def test_policy_is_a_policy(flavor):
    policy = flavor.policy_class()
    assert isinstance(policy, AbstractPolicy)


def test_policy_new_event_loop(flavor):
    policy = flavor.policy_class()
    lp = policy.new_event_loop()
    try:
        assert isinstance(lp, flavor.loop_class)
    finally:
        lp.close()


def test_policy_get_event_loop_creates_once_in_main_thread(flavor):
    policy = flavor.policy_class()
    if POLICIES_DEPRECATED:
        # 3.14: the policy no longer makes a loop on demand.
        with pytest.raises(RuntimeError, match="There is no current event loop"):
            policy.get_event_loop()
        return
    lp = policy.get_event_loop()
    try:
        assert isinstance(lp, flavor.loop_class)
        assert policy.get_event_loop() is lp
    finally:
        lp.close()


def test_policy_set_and_get_event_loop(flavor, loop):
    policy = flavor.policy_class()
    policy.set_event_loop(loop)
    assert policy.get_event_loop() is loop
    policy.set_event_loop(None)
    with pytest.raises(RuntimeError, match="There is no current event loop"):
        policy.get_event_loop()


def test_policy_get_event_loop_in_thread_without_loop(flavor):
    policy = flavor.policy_class()
    errors = []

    def other():
        try:
            policy.get_event_loop()
        except RuntimeError as exc:
            errors.append(str(exc))

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert len(errors) == 1
    assert "There is no current event loop" in errors[0]


def test_install_sets_policy(flavor):
    flavor.install()
    policy = get_policy()
    assert isinstance(policy, flavor.policy_class)


def test_install_then_new_event_loop(flavor):
    flavor.install()
    lp = asyncio.new_event_loop()
    try:
        assert isinstance(lp, flavor.loop_class)
    finally:
        lp.close()


def test_install_then_stdlib_run(flavor):
    flavor.install()

    async def main():
        return type(asyncio.get_running_loop())

    assert issubclass(asyncio.run(main()), flavor.loop_class)


def test_install_then_runner_without_factory(flavor):
    flavor.install()
    with asyncio.Runner() as runner:
        assert isinstance(runner.get_loop(), flavor.loop_class)

        async def main():
            return asyncio.get_running_loop()

        assert runner.run(main()) is runner.get_loop()


def test_run_returns_result_on_flavor_loop(flavor):
    async def main(x):
        await asyncio.sleep(0)
        return x, asyncio.get_running_loop()

    value, lp = flavor.run(main("v"))
    assert value == "v"
    assert isinstance(lp, flavor.loop_class)
    assert lp.is_closed()
    assert not lp.is_running()


def test_run_propagates_exception(flavor):
    async def main():
        raise LookupError("inside run")

    with pytest.raises(LookupError, match="inside run"):
        flavor.run(main())


def test_run_uses_fresh_loop_each_time(flavor):
    async def main():
        return asyncio.get_running_loop()

    a = flavor.run(main())
    b = flavor.run(main())
    assert a is not b
    assert a.is_closed() and b.is_closed()


def test_run_cancels_leftover_tasks(flavor):
    log = []

    async def background():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    async def main():
        asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0)
        return "main done"

    assert flavor.run(main()) == "main done"
    assert log == ["cancelled"]


def test_run_shuts_down_default_executor(flavor):
    threads = []

    async def main():
        lp = asyncio.get_running_loop()
        threads.append(await lp.run_in_executor(None, threading.current_thread))

    flavor.run(main())
    threads[0].join(timeout=5)
    assert not threads[0].is_alive()


# 3.14's Runner.run takes any awaitable; before, only a coroutine.
RUN_TAKES_AWAITABLES = sys.version_info >= (3, 14)


def test_run_rejects_non_coroutine(flavor):
    if RUN_TAKES_AWAITABLES:
        with pytest.raises(TypeError, match="a coroutine or an awaitable is required"):
            flavor.run(42)
    else:
        with pytest.raises(ValueError, match="a coroutine was expected"):
            flavor.run(42)


class _Awaitable:
    def __await__(self):
        yield from asyncio.sleep(0).__await__()
        return "awaited"


def test_run_awaitable(flavor):
    if RUN_TAKES_AWAITABLES:
        assert flavor.run(_Awaitable()) == "awaited"
    else:
        with pytest.raises(ValueError, match="a coroutine was expected"):
            flavor.run(_Awaitable())


def test_run_from_running_loop(flavor, loop):
    async def inner():
        pass

    async def main():
        coro = inner()
        try:
            flavor.run(coro)
        finally:
            coro.close()

    with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
        loop.run_until_complete(main())


def test_runner_with_loop_factory(flavor):
    with asyncio.Runner(loop_factory=flavor.new_event_loop) as runner:
        lp = runner.get_loop()
        assert isinstance(lp, flavor.loop_class)

        async def main(x):
            await asyncio.sleep(0)
            return x, asyncio.get_running_loop()

        assert runner.run(main(1)) == (1, lp)
        assert runner.run(main(2)) == (2, lp)  # same loop across run() calls
    assert lp.is_closed()


def test_runner_debug(flavor):
    with asyncio.Runner(loop_factory=flavor.new_event_loop, debug=True) as runner:
        assert runner.get_loop().get_debug() is True


def test_runner_close_shuts_down_asyncgens(flavor):
    log = []
    keep = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("closed")

    async def main():
        g = agen()
        keep.append(g)
        await g.__anext__()

    with asyncio.Runner(loop_factory=flavor.new_event_loop) as runner:
        runner.run(main())
        assert log == []
    assert log == ["closed"]


@pytest.mark.parametrize("debug", [False, True], ids=["", "debug"])
def test_unclosed_current_loop_at_interpreter_exit(flavor, run_python, debug):
    """A loop left open as the thread's current loop is finalized during interpreter
    shutdown, possibly after the modules its close() uses: nothing may be printed and the
    exit status stays 0 (aiosmtpd's tests leave loops like this)."""
    # Through the policy, as a program does: then the loop lives in asyncio's module state.
    install = "ferroloop.install()\n" if flavor.name == "ferroloop" else ""
    code = flavor.python_code(
        install + "loop = asyncio.new_event_loop()\n"
        f"loop.set_debug({debug})\n"
        "loop.call_soon(print, 'ran')\n"
        "loop.call_soon(loop.stop)\n"
        "loop.run_forever()\n"
        "asyncio.set_event_loop(loop)\n"
    )
    proc = run_python([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ran\n"
    assert proc.stderr == ""
