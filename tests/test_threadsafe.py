"""call_soon_threadsafe: no lost calls, per-thread ordering, prompt wake-ups."""

import asyncio
import contextvars
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(30)

N_THREADS = 4
N_CALLS = 10_000


def test_hammer_from_threads(loop):
    total = N_THREADS * N_CALLS
    received = {t: [] for t in range(N_THREADS)}
    count = 0

    def record(tid, i):
        nonlocal count
        received[tid].append(i)
        count += 1
        if count == total:
            loop.stop()

    start = threading.Barrier(N_THREADS + 1)

    def producer(tid):
        start.wait()
        for i in range(N_CALLS):
            loop.call_soon_threadsafe(record, tid, i)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()

    def release():
        start.wait()

    # Release the producers only once the loop is running so that the calls
    # race with the loop's own processing.
    loop.call_soon(release)
    safety = loop.call_later(20, loop.stop)
    loop.run_forever()
    safety.cancel()
    for th in threads:
        th.join()
    assert count == total
    for tid in range(N_THREADS):
        assert received[tid] == list(range(N_CALLS)), f"thread {tid} lost or reordered calls"


def test_calls_before_run_are_kept(loop):
    out = []

    def producer():
        for i in range(100):
            loop.call_soon_threadsafe(out.append, i)

    th = threading.Thread(target=producer)
    th.start()
    th.join()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == list(range(100))


def test_wakes_loop_blocked_in_poll(loop):
    fut = loop.create_future()
    # Far-away timer only: the loop blocks in its poll for up to 30 s.
    safety = loop.call_later(30, loop.stop)

    def wake():
        time.sleep(0.2)
        loop.call_soon_threadsafe(fut.set_result, "woken")

    th = threading.Thread(target=wake)
    t0 = time.monotonic()
    th.start()
    assert loop.run_until_complete(fut) == "woken"
    elapsed = time.monotonic() - t0
    th.join()
    safety.cancel()
    assert elapsed < 5


def test_repeated_wakeups(loop):
    # Many sequential wake-ups of an idle loop must each be delivered promptly.
    safety = loop.call_later(20, loop.stop)

    async def main():
        for i in range(50):
            fut = loop.create_future()
            th = threading.Thread(target=loop.call_soon_threadsafe, args=(fut.set_result, i))
            th.start()
            assert await fut == i
            th.join()
        return "done"

    t0 = time.monotonic()
    assert loop.run_until_complete(main()) == "done"
    assert time.monotonic() - t0 < 5
    safety.cancel()


def test_stop_from_other_thread(loop):
    safety = loop.call_later(30, loop.stop)
    th = threading.Timer(0.1, loop.call_soon_threadsafe, args=(loop.stop,))
    t0 = time.monotonic()
    th.start()
    loop.run_forever()
    th.join()
    assert time.monotonic() - t0 < 5
    safety.cancel()


def test_threadsafe_returns_cancellable_handle(loop):
    out = []
    h = loop.call_soon_threadsafe(out.append, "x")
    h.cancel()
    assert h.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == []


def test_threadsafe_context_argument(loop):
    var = contextvars.ContextVar("var", default="unset")
    ctx = contextvars.Context()
    ctx.run(var.set, "ctx")
    seen = []

    def producer():
        loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=producer)
    th.start()
    th.join()
    loop.run_forever()
    assert seen == ["ctx"]


def test_run_coroutine_threadsafe(loop):
    results = []

    async def work(x):
        await asyncio.sleep(0)
        return x + 1

    def client():
        fut = asyncio.run_coroutine_threadsafe(work(41), loop)
        results.append(fut.result(timeout=10))
        loop.call_soon_threadsafe(loop.stop)

    safety = loop.call_later(20, loop.stop)
    th = threading.Thread(target=client)
    th.start()
    loop.run_forever()
    th.join()
    safety.cancel()
    assert results == [42]


def test_threadsafe_on_closed_loop(loop):
    loop.close()
    errors = []

    def producer():
        try:
            loop.call_soon_threadsafe(print)
        except RuntimeError as exc:
            errors.append(str(exc))

    th = threading.Thread(target=producer)
    th.start()
    th.join()
    assert errors == ["Event loop is closed"]


# 3.14's call_soon_threadsafe handles (events._ThreadSafeHandle): cancel() and cancelled() from
# another thread wait while the callback runs; the loop's own thread does not wait.
THREADSAFE_HANDLE_LOCK = hasattr(asyncio.events, "_ThreadSafeHandle")


def _run_with_thread(loop, callback, in_thread):
    """Schedule ``callback`` from a thread that then runs ``in_thread(handle, started)``;
    returns what the thread returned, or raises what it raised."""
    started = threading.Event()
    outcome = {}

    def wrapped(arg):
        started.set()
        callback(arg)

    def thread():
        try:
            handle = loop.call_soon_threadsafe(wrapped, "hello")
            started.wait(10)
            outcome["result"] = in_thread(handle)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=thread)
    th.start()
    loop.run_forever()
    th.join(10)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@pytest.mark.parametrize("method", ["cancel", "cancelled"])
def test_threadsafe_handle_other_thread_waits_for_running_callback(loop, method):
    finished = threading.Event()
    results = []

    def callback(arg):
        results.append(arg)
        time.sleep(0.3)
        finished.set()

    def in_thread(handle):
        answer = getattr(handle, method)()
        return answer, finished.is_set()

    answer, finished_first = _run_with_thread(loop, callback, in_thread)
    assert results == ["hello"]
    assert answer is None if method == "cancel" else answer is False
    if THREADSAFE_HANDLE_LOCK:
        assert finished_first
    else:
        # Before 3.14 nothing waits: the answer comes while the callback sleeps.
        assert not finished_first


def test_threadsafe_handle_cancelled_by_itself_does_not_wait(loop):
    handles = []
    done = threading.Event()

    def callback(arg):
        # The loop's own thread: cancel() and cancelled() answer at once.
        handles[0].cancel()
        assert handles[0].cancelled()
        done.set()

    started = threading.Event()

    def schedule():
        handles.append(loop.call_soon_threadsafe(callback, "x"))
        started.set()

    th = threading.Thread(target=schedule)
    th.start()
    started.wait(10)
    th.join(10)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert done.is_set()
    assert handles[0].cancelled()


def test_threadsafe_handle_cancelled_before_it_runs_does_not_run(loop):
    ran = []
    handle = None

    def schedule():
        nonlocal handle
        handle = loop.call_soon_threadsafe(ran.append, 1)
        handle.cancel()
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=schedule)
    th.start()
    th.join(10)
    loop.run_forever()
    assert ran == []
    assert handle.cancelled()


# -- fair under floods ---------------------------------------------------------------------------


def _flood(loop, threads=8):
    """Start `threads` threads posting no-op callbacks as fast as they can; returns a stop()."""
    stop = threading.Event()

    def noop():
        pass

    def flood():
        while not stop.is_set():
            try:
                loop.call_soon_threadsafe(noop)
            except RuntimeError:  # the loop was closed
                return

    workers = [threading.Thread(target=flood) for _ in range(threads)]
    for w in workers:
        w.start()

    def finish():
        stop.set()
        for w in workers:
            w.join(10)

    return finish


def test_timer_fires_on_time_under_a_threadsafe_flood(loop):
    """Threads flooding call_soon_threadsafe must not delay a timer far beyond its time: each
    iteration takes a bounded share of the inbox, and producers far ahead yield the GIL."""
    finish = _flood(loop)
    try:
        t0 = time.monotonic()
        fired = []
        loop.call_later(0.05, lambda: (fired.append(time.monotonic() - t0), loop.stop()))
        loop.run_forever()
    finally:
        finish()
    assert 0.05 <= fired[0] <= 0.5


def test_run_stop_close_under_a_threadsafe_flood(new_loop):
    for _ in range(20):
        lp = new_loop()
        finish = _flood(lp)
        t0 = time.monotonic()
        try:
            lp.call_later(0.01, lp.stop)
            lp.run_forever()
            lp.close()
        finally:
            finish()
        assert time.monotonic() - t0 <= 1.0


def test_io_is_seen_while_a_callback_reschedules_itself_forever(loop):
    """A call_soon chain that never ends keeps the ready queue full: the loop must still poll
    for I/O, as asyncio polls every iteration."""
    import socket

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    spins = 0

    def spin():
        nonlocal spins
        spins += 1
        loop.call_soon(spin)

    def readable():
        loop.remove_reader(a)
        loop.stop()

    try:
        loop.call_soon(spin)
        loop.add_reader(a, readable)
        loop.call_later(0.02, b.send, b"x")
        t0 = time.monotonic()
        loop.run_forever()
        elapsed = time.monotonic() - t0
    finally:
        a.close()
        b.close()
    assert spins > 10
    assert elapsed < 0.5


def test_io_ready_when_the_loop_stops_is_handled_before_it_returns(loop):
    """The loop may skip polls while callbacks are queued, but not across the end of a run: a
    peer's close that arrived before run_until_complete returns has been seen by then, as the
    stock loop (which polls every iteration) sees it."""
    import socket

    class Proto(asyncio.Protocol):
        lost = False

        def connection_lost(self, exc):
            self.lost = True

    a, b = socket.socketpair()
    tr, pr = loop.run_until_complete(loop.connect_accepted_socket(Proto, a))
    loop.run_until_complete(asyncio.sleep(0.01))
    fut = loop.create_future()

    def close_peer():
        b.close()  # the EOF is in the kernel at once; the next iterations end the run
        loop.call_soon(fut.set_result, None)

    loop.call_soon(close_peer)
    loop.run_until_complete(fut)
    assert tr.is_closing()
    loop.run_until_complete(asyncio.sleep(0))
    assert pr.lost


def test_threadsafe_call_racing_the_loop_start_wakes_it(loop):
    """call_soon_threadsafe from a thread while the loop is not running yet, with Python code
    running inside the call (debug mode's coroutine-function check asks the callback for
    `_is_coroutine`; this one sleeps there): the loop starts and goes to sleep meanwhile, and the
    call must still wake it. ferroloop decided 'not running: append to the ready queue' before
    that code ran, and the loop slept on (asyncio's run_coroutine_threadsafe test hung that way
    under load)."""
    fut = loop.create_future()
    started = threading.Event()

    class SlowToInspect:
        slept = False

        def __call__(self):
            fut.set_result("woken")

        def __getattr__(self, name):
            if name == "_is_coroutine" and not SlowToInspect.slept:
                SlowToInspect.slept = True
                started.set()
                time.sleep(0.3)  # the GIL is free: the loop thread starts and sleeps
            raise AttributeError(name)

    loop.set_debug(True)
    th = threading.Thread(target=loop.call_soon_threadsafe, args=(SlowToInspect(),))
    th.start()
    started.wait(5)
    safety = loop.call_later(3, loop.stop)
    t0 = time.monotonic()
    try:
        result = loop.run_until_complete(fut)
    finally:
        safety.cancel()
        th.join(5)
    assert result == "woken"
    assert time.monotonic() - t0 < 1.5
