"""call_later / call_at and TimerHandle."""

import asyncio
import contextvars
import time

import pytest

pytestmark = pytest.mark.timeout(10)

var = contextvars.ContextVar("var", default="unset")


def cb():
    pass


async def coro_func():
    pass


def test_call_later_fires(loop):
    out = []
    t0 = time.monotonic()
    loop.call_later(0.05, out.append, "x")
    loop.call_later(0.06, loop.stop)
    loop.call_later(5, loop.stop)  # safety net
    loop.run_forever()
    elapsed = time.monotonic() - t0
    assert out == ["x"]
    assert 0.04 <= elapsed < 5


def test_call_later_not_early(loop):
    fired_at = []
    start = loop.time()
    loop.call_later(0.05, lambda: fired_at.append(loop.time()))
    loop.call_later(0.07, loop.stop)
    loop.run_forever()
    assert len(fired_at) == 1
    assert fired_at[0] - start >= 0.05 - 0.002  # tolerate clock resolution


def test_call_later_ordered_by_deadline(loop):
    out = []
    loop.call_later(0.03, out.append, "c")
    loop.call_later(0.01, out.append, "a")
    loop.call_later(0.02, out.append, "b")
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert out == ["a", "b", "c"]


def test_call_at_ordered_by_deadline(loop):
    out = []
    now = loop.time()
    for d in (0.04, 0.01, 0.03, 0.02):
        loop.call_at(now + d, out.append, d)
    loop.call_at(now + 0.05, loop.stop)
    loop.run_forever()
    assert out == [0.01, 0.02, 0.03, 0.04]


def test_call_at_tie_in_scheduling_order(loop):
    # Two timers with exactly the same deadline run in scheduling order.  (The
    # stock loop does not guarantee FIFO for larger ties: its heap is unstable.)
    out = []
    when = loop.time() + 0.01
    loop.call_at(when, out.append, "first")
    loop.call_at(when, out.append, "second")
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert out == ["first", "second"]


def test_many_timers_all_fire_in_order(loop):
    out = []
    now = loop.time()
    for i in range(500):
        loop.call_at(now + (i % 50) * 0.001 + i * 1e-6, out.append, i)
    loop.call_at(now + 0.1, loop.stop)
    loop.run_forever()
    assert sorted(out) == list(range(500))
    expected = sorted(range(500), key=lambda i: (i % 50) * 0.001 + i * 1e-6)
    assert out == expected


def test_zero_and_negative_delays(loop):
    out = []
    h_neg = loop.call_later(-1, out.append, "neg")
    h_zero = loop.call_later(0, out.append, "zero")
    assert h_neg.when() < loop.time()
    assert h_zero.when() <= loop.time()
    loop.call_later(5, loop.stop)  # safety net
    loop.call_later(0.01, loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - t0 < 5
    assert out == ["neg", "zero"]


def test_call_at_in_past_runs_promptly(loop):
    out = []
    loop.call_at(loop.time() - 100, out.append, "past")
    loop.call_at(0, out.append, "epoch")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["epoch", "past"]  # deadline order: 0 < time() - 100


def test_timer_and_call_soon_both_run(loop):
    out = []
    loop.call_later(0, out.append, "timer")
    loop.call_soon(out.append, "soon")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert sorted(out) == ["soon", "timer"]


def test_call_later_none_delay(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, cb)


def test_call_at_none_when(loop):
    with pytest.raises(TypeError):
        loop.call_at(None, cb)


def test_timer_passes_args(loop):
    out = []
    loop.call_later(0, lambda *a: out.append(a), 1, 2, 3)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == [(1, 2, 3)]


def test_timer_handle_when_call_at(loop):
    when = loop.time() + 12.5
    h = loop.call_at(when, cb)
    assert h.when() == when
    assert isinstance(h.when(), float)
    h.cancel()


def test_timer_handle_when_call_later(loop):
    before = loop.time()
    h = loop.call_later(10, cb)
    after = loop.time()
    assert before + 10 <= h.when() <= after + 10
    h.cancel()


def test_cancel_timer(loop):
    out = []
    h = loop.call_later(0.01, out.append, "cancelled")
    loop.call_later(0.02, out.append, "kept")
    loop.call_later(0.03, loop.stop)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    loop.run_forever()
    assert out == ["kept"]


def test_cancel_timer_from_callback_same_deadline(loop):
    out = []
    when = loop.time() + 0.01
    handles = []

    def first():
        out.append("first")
        handles[0].cancel()

    loop.call_at(when, first)
    handles.append(loop.call_at(when, out.append, "second"))
    loop.call_at(when + 0.02, loop.stop)
    loop.run_forever()
    assert out == ["first"]


def test_cancel_many_timers(loop):
    out = []
    handles = [loop.call_later(0.01, out.append, i) for i in range(1000)]
    for h in handles[::2]:
        h.cancel()
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert sorted(out) == list(range(1, 1000, 2))


def test_far_timer_does_not_block_near_timer(loop):
    out = []
    loop.call_later(3600, out.append, "far")
    loop.call_later(0.01, out.append, "near")
    loop.call_later(0.02, loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - t0 < 5
    assert out == ["near"]


def test_timer_handle_repr(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    code = cb.__code__
    h = loop.call_at(1234.5, cb)
    assert repr(h) == f"<TimerHandle when=1234.5 cb() at {code.co_filename}:{code.co_firstlineno}>"
    h.cancel()


def test_timer_handle_repr_prefix(loop):
    h = loop.call_later(10, cb)
    assert repr(h).startswith(f"<TimerHandle when={h.when()} cb() at ")
    h.cancel()


def test_timer_handle_repr_cancelled(loop):
    h = loop.call_at(1234.5, cb)
    h.cancel()
    r = repr(h)
    assert r.startswith("<TimerHandle")
    assert "cancelled" in r
    assert "when=1234.5" in r


def test_timer_context_argument(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "ctx-value")
    seen = []
    loop.call_later(0, lambda: seen.append(var.get()), context=ctx)
    loop.call_at(loop.time(), lambda: seen.append(var.get()), context=ctx)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert seen == ["ctx-value", "ctx-value"]


def test_timer_default_context_is_copy(loop):
    seen = []
    token = var.set("scheduled")
    try:
        loop.call_later(0, lambda: seen.append(var.get()))
    finally:
        var.reset(token)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert seen == ["scheduled"]


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_timer_rejects_coroutine_function_in_debug(loop, method):
    loop.set_debug(True)
    # The stock loop reports call_later() errors as call_at() (it delegates).
    with pytest.raises(TypeError, match=r"coroutines cannot be used with call_(at|later)\(\)"):
        getattr(loop, method)(1, coro_func)


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_timer_rejects_coroutine_object_in_debug(loop, method):
    loop.set_debug(True)
    coro = coro_func()
    try:
        with pytest.raises(TypeError, match=r"coroutines cannot be used with call_(at|later)\(\)"):
            getattr(loop, method)(1, coro)
    finally:
        coro.close()


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_timer_rejects_non_callable_in_debug(loop, method):
    loop.set_debug(True)
    with pytest.raises(TypeError, match=r"a callable object was expected by call_(at|later)\(\)"):
        getattr(loop, method)(1, "not callable")


@pytest.mark.parametrize("delay", [float("inf"), 1e12, 10**12])
def test_huge_delay_does_not_break_loop(loop, delay):
    out = []
    far = loop.call_later(delay, out.append, "far")
    assert far.when() >= 1e12 or far.when() == float("inf")
    loop.call_later(0.01, out.append, "near")
    loop.call_later(0.02, loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - t0 < 5
    assert out == ["near"]
    far.cancel()


def test_call_at_infinity(loop):
    out = []
    h = loop.call_at(float("inf"), out.append, "never")
    assert h.when() == float("inf")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == []


def test_call_later_bad_delay_type(loop):
    with pytest.raises(TypeError):
        loop.call_later("1", cb)


def test_timer_handle_ordering(loop):
    h1 = loop.call_at(10.0, cb)
    h2 = loop.call_at(20.0, cb)
    assert h1 < h2 and h2 > h1
    assert h1 <= h2 and h2 >= h1
    assert h1 != h2
    assert sorted([h2, h1]) == [h1, h2]
    h1.cancel()
    h2.cancel()


def test_timer_handle_cancel_after_fire(loop):
    out = []
    h = loop.call_later(0, out.append, 1)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == [1]
    h.cancel()  # harmless
    assert h.cancelled()


def test_timer_scheduled_from_timer(loop):
    out = []

    def first():
        out.append("first")
        loop.call_later(0.01, second)

    def second():
        out.append("second")
        loop.stop()

    loop.call_later(0.01, first)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert out == ["first", "second"]


def test_many_sequential_sleeps_accumulate(loop):

    async def main():
        t0 = loop.time()
        for _ in range(10):
            await asyncio.sleep(0.005)
        return loop.time() - t0

    elapsed = loop.run_until_complete(main())
    assert 0.045 <= elapsed < 5
