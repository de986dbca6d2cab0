"""Handles stay correct across their whole life: held, released, recycled, collected.

ferroloop reuses a handle object once it ran and nothing else references it; these tests would
catch a handle being reused while someone still holds it, arguments leaking from one callback
into the next, or a reference cycle through a handle never being collected.
"""

from __future__ import annotations

import asyncio
import contextvars
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

    def __init__(self, loop, delay=3600):
        self.timer = loop.call_later(delay, self.on_timeout)

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


def test_loop_that_made_futures_is_collectable(flavor):
    """A loop that made futures (ferroloop keeps the `loop=` argument it passes them) and a
    future left pending are collected once unreachable."""
    lp = flavor.new_event_loop()
    fut = lp.run_until_complete(_make_future(lp))
    assert fut._loop is lp and not fut.done()
    lp.close()
    ref = weakref.ref(lp)
    del lp, fut
    gc.collect()
    assert ref() is None


async def _make_future(lp):
    done = lp.create_future()
    done.set_result(None)
    await done
    return lp.create_future()


def test_cycle_through_a_fired_timer_handle_is_collected(loop):
    """self._timer = loop.call_later(0, self.cb): after the timer fires the handle is reachable
    only from its owner, and the cycle owner -> handle -> bound method -> owner is garbage."""
    owner = _Owner(loop, delay=0)
    ref = weakref.ref(owner)
    loop.run_until_complete(asyncio.sleep(0.01))
    del owner
    gc.collect()
    assert ref() is None


def test_unclosed_loop_in_a_cycle_through_its_pending_timers_is_collected(flavor):
    """loop -> pending timer -> bound method of the loop -> loop: with nothing else holding
    them, the GC collects all of it (ferroloop's pending handles are not GC-tracked, and the
    loop reports what they hold)."""
    lp = flavor.new_event_loop()
    lp.call_later(3600, lp.stop)
    lp.call_soon(lp.call_soon, lp.stop)
    ref = weakref.ref(lp)
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del lp
        gc.collect()
    assert ref() is None


def test_pending_handle_referenced_from_outside_keeps_its_callback_alive(loop):
    """The other direction: a pending timer held by the program too must keep its callback
    (and what the callback reaches) alive through collections, and run it."""

    class Target:
        hits = 0

        def hit(self):
            Target.hits += 1

    target = Target()
    keep = [loop.call_later(0.01, target.hit) for _ in range(50)]
    plain = [loop.call_soon(target.hit) for _ in range(50)]
    ref = weakref.ref(target)
    del target
    for _ in range(3):
        gc.collect()
    assert ref() is not None
    loop.run_until_complete(asyncio.sleep(0.05))
    assert Target.hits == 100
    assert all(h._callback is not None for h in keep + plain)
    del keep, plain
    gc.collect()
    assert ref() is None


def test_pending_handles_survive_collections_with_only_the_loop_holding_them(loop):
    """Handles only the loop references, their callbacks reachable only through them, through
    full collections: nothing is freed early (closures and their cells included)."""
    results = []

    def make(i):
        box = [i]
        return lambda: results.append(box[0])

    for i in range(300):
        loop.call_soon(make(i))
        loop.call_later(0.001 * (i % 7), make(1000 + i))
    gc.collect()
    gc.collect()
    loop.run_until_complete(asyncio.sleep(0.05))
    assert sorted(results) == sorted(list(range(300)) + list(range(1000, 1300)))


def test_reader_callbacks_survive_collections_and_their_cycle_is_collected(flavor):
    """A reader's handle, ready to run (queued by the poll) and still registered, through full
    collections: its callback's closure stays alive, and once the program lets go of the loop,
    loop -> reader handle -> closure -> loop is collected."""
    import socket

    lp = flavor.new_event_loop()
    a, b = socket.socketpair()
    try:
        seen = []

        def make(loop):
            box = [loop]
            return lambda: (seen.append(box[0] is loop), gc.collect(), loop.stop())

        lp.add_reader(b, make(lp))
        lp.call_soon(gc.collect)
        a.send(b"x")
        gc.collect()
        lp.run_forever()
        assert seen and all(seen)
        ref = weakref.ref(lp)
        with pytest.warns(ResourceWarning, match="unclosed event loop"):
            del lp
            gc.collect()
        assert ref() is None
    finally:
        a.close()
        b.close()


def test_ferroloop_pending_handles_are_not_gc_tracked(ferro):
    """The property the speed depends on: the GC does not traverse pending handles; one that
    leaves the loop while held elsewhere is tracked again."""
    soon = ferro.call_soon(lambda: None)
    later = ferro.call_later(3600, lambda: None)
    assert not gc.is_tracked(soon) and not gc.is_tracked(later)
    ferro.run_until_complete(asyncio.sleep(0))
    assert gc.is_tracked(soon)  # it ran, and this test still holds it
    assert not gc.is_tracked(later)  # still pending
    later.cancel()
    ferro.run_until_complete(asyncio.sleep(0))


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


def test_handle_reused_after_a_cancelled_one_has_its_own_repr(loop):
    """In debug mode cancel() freezes a handle's repr; a handle made after that one was released
    (ferroloop reuses the object) shows its own callback and is not cancelled."""
    loop.set_debug(True)

    def first_callback():
        pass

    def second_callback():
        pass

    for _ in range(3):
        loop.call_soon(first_callback).cancel()
    loop.run_until_complete(asyncio.sleep(0))
    handles = [loop.call_soon(second_callback) for _ in range(3)]
    for h in handles:
        text = repr(h)
        assert "second_callback" in text and "first_callback" not in text, text
        assert not text.startswith("<Handle cancelled") and not h.cancelled(), text
    loop.run_until_complete(asyncio.sleep(0))


def test_handles_can_be_weakly_referenced(loop):
    soon = loop.call_soon(lambda: None)
    later = loop.call_later(3600, lambda: None)
    assert weakref.ref(soon)() is soon
    assert weakref.ref(later)() is later
    assert weakref.proxy(later).when() == later.when()
    later.cancel()


def test_weak_reference_to_a_handle_dies_once_it_ran_and_nobody_holds_it(loop):
    """And it stays dead: the loop must not hand the same object out again for a later
    call_soon (ferroloop reuses handles nothing references)."""
    ran = []
    died = []
    ref = weakref.ref(loop.call_soon(ran.append, 1), died.append)
    assert ref() is not None  # pending: the loop holds it
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == [1]
    assert ref() is None
    assert died == [ref]
    later = [loop.call_soon(ran.append, i) for i in range(1000)]
    assert ref() is None
    assert all(h is not None for h in later)
    loop.run_until_complete(asyncio.sleep(0))
    assert ref() is None
    assert len(ran) == 1001


def test_weak_reference_to_a_held_handle_outlives_its_run(loop):
    handle = loop.call_soon(lambda: None)
    ref = weakref.ref(handle)
    loop.run_until_complete(asyncio.sleep(0))
    for _ in range(100):
        loop.call_soon(lambda: None)
    loop.run_until_complete(asyncio.sleep(0))
    assert ref() is handle
    del handle
    gc.collect()
    assert ref() is None


def test_weak_reference_to_a_timer_handle_dies_when_it_fires_or_is_cancelled(loop):
    fired = weakref.ref(loop.call_later(0, lambda: None))
    cancelled_handle = loop.call_later(3600, lambda: None)
    cancelled = weakref.ref(cancelled_handle)
    pending = weakref.ref(loop.call_later(3600, lambda: None))
    cancelled_handle.cancel()
    del cancelled_handle
    loop.run_until_complete(asyncio.sleep(0.01))
    gc.collect()
    assert fired() is None
    assert cancelled() is None
    assert pending() is not None  # only the loop holds it, and it is still scheduled
    pending().cancel()


def test_weakref_callback_of_a_handle_may_use_the_loop(loop):
    """The callback runs when the handle is released, which is in the middle of the loop's own
    work: scheduling from it must work."""
    ran = []
    refs = [
        weakref.ref(loop.call_soon(ran.append, i), lambda _ref, i=i: loop.call_soon(ran.append, -i))
        for i in range(1, 4)
    ]
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(asyncio.sleep(0))
    assert all(r() is None for r in refs)
    assert sorted(ran) == [-3, -2, -1, 1, 2, 3]


def test_handles_of_a_collected_loop_release_their_weak_references(flavor):
    lp = flavor.new_event_loop()
    refs = [weakref.ref(lp.call_soon(lp.stop)), weakref.ref(lp.call_later(3600, lp.stop))]
    lp_ref = weakref.ref(lp)
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del lp
        gc.collect()
    assert lp_ref() is None
    assert [r() for r in refs] == [None, None]


def _reader_handle_in_a_cycle(loop, fd):
    """``owner.handle = loop._add_reader(fd, cb)`` with ``owner`` reachable from the handle's
    context only (a context variable): after cancel(), which releases the callback, the cycle
    owner -> handle -> context -> owner is left, for the GC to find through the handle. The
    internal ``_add_reader`` is asyncio's own way to keep a watcher's handle."""

    class Owner:
        pass

    var = contextvars.ContextVar("owner")
    owner = Owner()
    ctx = contextvars.copy_context()
    ctx.run(var.set, owner)
    owner.handle = ctx.run(loop._add_reader, fd, lambda: None)
    return weakref.ref(owner)


def test_cycle_through_a_replaced_reader_handle_is_collected(loop):
    import socket

    a, b = socket.socketpair()
    try:
        ref = _reader_handle_in_a_cycle(loop, a.fileno())
        loop._add_reader(a.fileno(), lambda: None)
        assert ref().handle.cancelled()
        gc.collect()
        assert ref() is None
        loop._remove_reader(a.fileno())
    finally:
        a.close()
        b.close()


def test_cycle_through_a_removed_reader_handle_is_collected(loop):
    import socket

    a, b = socket.socketpair()
    try:
        ref = _reader_handle_in_a_cycle(loop, a.fileno())
        assert loop._remove_reader(a.fileno())
        gc.collect()
        assert ref() is None
    finally:
        a.close()
        b.close()


def test_cycle_through_a_reader_handle_a_transport_replaced_is_collected(loop):
    """A reader left on an fd whose socket was closed without remove_reader: a transport on a
    new socket that got the same number takes the fd over, cancelling the old handle (asyncio's
    _add_reader does), and the cycle through that handle is collected."""
    import socket

    a, b = socket.socketpair()
    fd = a.fileno()
    ref = _reader_handle_in_a_cycle(loop, fd)
    a.close()
    c, d = socket.socketpair()
    try:
        if c.fileno() != fd:
            d, c = c, d
        assert c.fileno() == fd  # the lowest free number, as the kernel hands them out
        tr, _ = loop.run_until_complete(loop.connect_accepted_socket(asyncio.Protocol, c))
        loop.run_until_complete(asyncio.sleep(0))
        assert ref().handle.cancelled()
        gc.collect()
        assert ref() is None
        tr.close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        b.close()
        c.close()
        d.close()
