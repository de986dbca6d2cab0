"""Loop lifecycle: run_forever, run_until_complete, stop, close, is_running, time."""

import asyncio
import gc
import time
import warnings
import weakref

import pytest

pytestmark = pytest.mark.timeout(10)


def test_run_forever_until_stop(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_soon(loop.stop)
    loop.call_soon(out.append, 2)  # same iteration as stop(): still runs
    loop.run_forever()
    assert out == [1, 2]
    assert not loop.is_running()
    assert not loop.is_closed()


def test_run_forever_can_be_restarted(loop):
    out = []
    for i in range(3):
        loop.call_soon(out.append, i)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert out == [0, 1, 2]


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "value")
    assert loop.run_until_complete(fut) == "value"
    assert not loop.is_running()


def test_run_until_complete_coroutine(loop):
    async def main(x):
        await asyncio.sleep(0)
        return x * 2

    assert loop.run_until_complete(main(21)) == 42


def test_run_until_complete_done_future_returns_immediately(loop):
    fut = loop.create_future()
    fut.set_result(7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_awaitable_object(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_non_awaitable(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete(42)


def test_run_until_complete_raises_exception(loop):
    class Boom(Exception):
        pass

    async def main():
        await asyncio.sleep(0)
        raise Boom("bad")

    with pytest.raises(Boom, match="bad"):
        loop.run_until_complete(main())
    assert not loop.is_running()
    # The loop is still usable afterwards.
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_run_until_complete_future_exception(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, ValueError("from future"))
    with pytest.raises(ValueError, match="from future"):
        loop.run_until_complete(fut)


def test_run_until_complete_cancelled(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


def test_run_until_complete_future_of_other_loop(loop, new_loop):
    other = new_loop()
    fut = other.create_future()
    with pytest.raises(ValueError):
        loop.run_until_complete(fut)


def test_nested_run_until_complete(loop):
    errors = []

    async def main():
        coro = asyncio.sleep(0)
        try:
            loop.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            coro.close()
        return "outer"

    assert loop.run_until_complete(main()) == "outer"
    assert errors == ["This event loop is already running"]


def test_nested_run_forever(loop):
    errors = []

    def cb():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["This event loop is already running"]


def test_run_other_loop_while_running(loop, new_loop):
    other = new_loop()
    errors = []

    def cb():
        try:
            other.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["Cannot run the event loop while another loop is running"]
    assert not other.is_running()


def test_stopped_before_future_completed(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match=r"^Event loop stopped before Future completed\.$"):
        loop.run_until_complete(fut)
    assert not fut.done()
    # The future can still be completed by a later run.
    loop.call_soon(fut.set_result, 5)
    assert loop.run_until_complete(fut) == 5


def test_stopped_before_coroutine_completed(loop):
    started = []

    async def forever():
        started.append(True)
        await loop.create_future()

    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(forever())
    assert started == [True]
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))


def test_stop_before_run_runs_one_iteration(loop):
    out = []

    def first():
        out.append("first")
        loop.call_soon(out.append, "second")  # scheduled for the next iteration

    loop.call_soon(first)
    loop.stop()
    loop.run_forever()
    assert out == ["first"]
    # The callback scheduled during the iteration survives to the next run.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["first", "second"]


def test_stop_before_run_does_not_wait_for_timers(loop):
    fired = []
    loop.call_later(30, fired.append, True)
    loop.stop()
    t0 = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - t0 < 5
    assert fired == []


def test_stop_with_empty_loop_returns(loop):
    loop.stop()
    t0 = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - t0 < 5
    assert not loop.is_running()


def test_stop_inside_callback_defers_new_callbacks(loop):
    out = []

    def cb():
        loop.call_soon(out.append, "later")
        loop.stop()
        out.append("cb")

    loop.call_soon(cb)
    loop.run_forever()
    assert out == ["cb"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["cb", "later"]


def test_is_running(loop):
    seen = []
    assert not loop.is_running()
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [True]
    assert not loop.is_running()


def test_is_running_in_coroutine(loop):
    async def main():
        return loop.is_running(), asyncio.get_running_loop() is loop

    assert loop.run_until_complete(main()) == (True, True)
    assert not loop.is_running()


def test_close(loop):
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()  # idempotent
    assert loop.is_closed()


def test_close_running_loop(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


@pytest.mark.parametrize(
    "method, args",
    [
        ("call_soon", (print,)),
        ("call_later", (1, print)),
        ("call_at", (1, print)),
        ("call_soon_threadsafe", (print,)),
        ("run_forever", ()),
        ("run_in_executor", (None, print)),
        ("add_reader", (0, print)),
        ("add_writer", (1, print)),
    ],
)
def test_closed_loop_methods_raise(loop, method, args):
    loop.close()
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        getattr(loop, method)(*args)


def test_closed_loop_run_until_complete(loop):
    loop.close()
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
            loop.run_until_complete(coro)
    finally:
        coro.close()


def test_closed_loop_create_task(loop):
    loop.close()

    async def main():
        pass

    coro = main()
    try:
        with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
            loop.create_task(coro)
    finally:
        coro.close()


def test_time_is_monotonic(loop):
    values = [loop.time() for _ in range(1000)]
    assert all(isinstance(v, float) for v in values)
    assert values == sorted(values)


def test_time_comparable_to_time_monotonic(loop):
    before = time.monotonic()
    t = loop.time()
    after = time.monotonic()
    # Same clock as time.monotonic() (allow for rounding / clock-resolution slack).
    assert before - 0.01 <= t <= after + 0.01


def test_time_advances(loop):
    t0 = loop.time()
    time.sleep(0.02)
    t1 = loop.time()
    assert 0.015 <= t1 - t0 < 5


def test_stop_flag_is_reset_after_run(loop):
    loop.stop()
    loop.run_forever()
    # The previous stop() must not make the next run return early.
    out = []
    loop.call_later(0.02, out.append, "timer")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out == ["timer"]


def test_stop_twice_is_one_stop(loop):
    out = []
    loop.call_soon(loop.stop)
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.call_later(0.02, out.append, "ran")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out == ["ran"]


def test_running_loop_visible_in_callbacks(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.get_running_loop()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [loop]
    assert asyncio._get_running_loop() is None


def test_repr_shape(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    r = repr(loop)
    assert r.startswith("<") and r.endswith(">")
    assert "running=False closed=False debug=False" in r
    seen = []
    loop.call_soon(lambda: seen.append(repr(loop)))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert "running=True" in seen[0]
    loop.close()
    assert "closed=True" in repr(loop)


def test_unclosed_loop_resource_warning(flavor):

    lp = flavor.new_event_loop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del lp
        gc.collect()
    assert any(
        issubclass(w.category, ResourceWarning) and "unclosed event loop" in str(w.message)
        for w in caught
    )


def test_close_drops_pending_callbacks(loop):

    class Target:
        def method(self):
            pass

    t = Target()
    ref = weakref.ref(t)
    loop.call_soon(t.method)
    loop.call_later(3600, t.method)
    loop.call_at(loop.time() + 10, t.method)
    del t
    loop.close()
    gc.collect()
    assert ref() is None
