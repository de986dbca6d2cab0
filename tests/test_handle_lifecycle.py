"""Handles stay correct across their whole life: held, released, recycled, collected.

ferroloop reuses a handle object once it ran and nothing else references it; these tests would
catch a handle being reused while someone still holds it, arguments leaking from one callback
into the next, or a reference cycle through a handle never being collected.
"""

from __future__ import annotations

import gc
import sys
import weakref

import pytest


def test_held_handle_keeps_its_callback_after_running(loop):
    calls = []

    def cb(*args):
        calls.append(args)

    held = [loop.call_soon(cb, i) for i in range(5)]
    loop.call_soon(loop.stop)
    loop.run_forever()
    # Schedule many more so that any wrongly recycled object would be overwritten.
    for i in range(2000):
        loop.call_soon(cb, "later", i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls[:5] == [(i,) for i in range(5)]
    for i, h in enumerate(held):
        assert h._callback is cb
        assert h._args == (i,)
        if sys.version_info < (3, 13):  # 3.13 shows arguments only in debug mode
            assert f"cb({i})" in repr(h)
        assert not h.cancelled()


def test_every_callback_gets_its_own_arguments_across_iterations(loop):
    seen = []
    total = 5000

    def step(n):
        seen.append(("step", n))
        if n + 1 < total:
            loop.call_soon(step, n + 1)
            if n % 3 == 0:
                loop.call_soon(seen.append, ("side", n))
        else:
            loop.stop()

    loop.call_soon(step, 0)
    loop.run_forever()
    assert [n for kind, n in seen if kind == "step"] == list(range(total))
    assert [n for kind, n in seen if kind == "side"] == list(range(0, total - 1, 3))


def test_handle_passed_to_exception_handler_is_intact(loop):
    reports = []

    def handler(lp, context):
        h = context["handle"]
        reports.append((h._callback, h._args, repr(h)))

    def boom(x):
        raise ValueError(x)

    loop.set_exception_handler(handler)
    for i in range(3):
        loop.call_soon(boom, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    for _ in range(100):
        loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert [(cb, args) for cb, args, _ in reports] == [(boom, (i,)) for i in range(3)]
    assert all("boom(" in r for _, _, r in reports)


class _Owner:
    """Holds its own timer, whose callback is its own bound method: a cycle through a handle."""

    def __init__(self, loop):
        self.timer = loop.call_later(3600, self.on_timeout)

    def on_timeout(self):
        pass


def test_cycle_through_a_cancelled_timer_handle_is_collected(loop):
    owner = _Owner(loop)
    ref = weakref.ref(owner)
    owner.timer.cancel()
    del owner
    gc.collect()
    assert ref() is None


def test_cycle_through_a_pending_plain_handle_is_collected_after_it_runs(loop):
    class Node:
        pass

    node = Node()
    node.handle = loop.call_soon(lambda n=node: None)
    ref = weakref.ref(node)
    del node
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_closed_loop_that_had_pending_callbacks_is_collectable(flavor):
    lp = flavor.new_event_loop()
    lp.call_soon(lambda: None)
    lp.call_later(10, lambda: None)
    lp.close()
    ref = weakref.ref(lp)
    del lp
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("n", [1, 700])
def test_cancelled_handles_in_ready_queue_do_not_run(loop, n):
    ran = []
    handles = [loop.call_soon(ran.append, i) for i in range(n)]
    for h in handles[::2]:
        h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == list(range(n))[1::2]
    assert all(h.cancelled() for h in handles[::2])


def test_unclosed_loop_is_collected_with_a_resource_warning(flavor):
    lp = flavor.new_event_loop()
    lp.call_soon(lambda: None)
    lp.call_later(10, lambda: None)
    ref = weakref.ref(lp)
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del lp
        gc.collect()
    assert ref() is None


@pytest.mark.parametrize("when", [float("nan"), float("-inf")])
def test_degenerate_deadline_runs_at_once_without_crashing(loop, when):
    ran = []
    loop.call_at(when, ran.append, when)
    loop.run_until_complete(__import__("asyncio").sleep(0.01))
    assert len(ran) == 1


def test_infinite_delay_never_fires_and_does_not_break_polling(loop):
    ran = []
    loop.call_later(float("inf"), ran.append, "inf")
    loop.run_until_complete(__import__("asyncio").sleep(0.01))
    assert ran == []
