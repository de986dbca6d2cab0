"""Event-loop micro-benchmarks shared by bench/run.py, bench/callgrind.sh and bench/overhead.py.

Every benchmark is ``fn(loop, size) -> seconds``: it times only the hot part
(the loop is created beforehand by the caller) and performs ``size``
operations, so ``seconds / size`` is the time per operation.

The loop-core benchmarks also have a no-loop baseline, ``baseline(size) -> seconds``, run
for the pseudo-loop ``none``: the same user-level code (the benchmark's callbacks and
coroutines, with the same arguments, the same number of times) with no event loop at all.
Callbacks run from a plain ``while`` loop over a deque; coroutines are stepped with
``coro.send(None)`` by a round-robin trampoline (``_trampoline``). bench/overhead.py
subtracts its instruction count from each loop's: that difference is the part of the cost
a loop can change, and its floor is (about) zero. Each baseline's docstring says exactly
what it keeps and what it leaves out; bench/README.md has the table.

Run as a script it is the per-process worker used by run.py::

    python bench/benchmarks.py BENCH LOOP [SIZE] [--warmup N] [--dry]

which prints one JSON object on stdout, and::

    python bench/benchmarks.py --check LOOP

which prints the loop's version info (exit 3 if it cannot be imported). LOOP is one of
LOOPS or ``none`` (the no-loop baseline). A benchmark the loop does not implement
(NotImplementedError) exits with code 4 and prints ``{"unsupported": ..., "detail": ...}``.
``--markers`` makes the timed run call ``os.getppid()`` at its start and ``os.getpgrp()``
at its end, for ``valgrind --tool=callgrind --dump-before=getppid --dump-before=getpgrp``
(bench/overhead.py): the second dump then holds the timed part only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

# Every benchmark reads its clock through this module global (t0 and t1 of the timed part,
# exactly two calls per run): run_one(markers=True) swaps it for _marked_clock.
perf_counter = time.perf_counter


# --------------------------------------------------------------------------
# 0. The no-loop driver (pseudo-loop "none")
# --------------------------------------------------------------------------


class _Suspend(tuple):
    """``await _SUSPEND`` suspends the awaiting coroutine exactly once, with no loop object:
    ``__await__`` is tuple.__iter__ (C), whose iterator yields the single None and is then
    exhausted. None is the "just reschedule me" value asyncio's own ``sleep(0)`` yields."""

    __slots__ = ()
    __await__ = tuple.__iter__


_SUSPEND = _Suspend((None,))


def _trampoline(main: Coroutine[Any, Any, Any], ready: deque) -> Any:
    """Run ``main`` and every coroutine added to ``ready`` to completion, round-robin: pop
    one, ``send(None)``, put it at the back if it yielded. Returns main's result. No futures,
    no tasks, no callbacks, no clock, no polling."""
    ready.appendleft(main)
    popleft, append = ready.popleft, ready.append
    result = None
    while ready:
        coro = popleft()
        try:
            coro.send(None)
        except StopIteration as e:
            if coro is main:
                result = e.value
            continue
        append(coro)
    return result


async def _wait_others(ready: deque) -> None:
    """The baselines' stand-in for gather(): step aside until every other coroutine in
    ``ready`` has finished (one extra step per round-robin round)."""
    while ready:
        await _SUSPEND


def _nothing() -> None:
    """Stand-in for loop.stop(): a plain while loop stops by itself when its deque is empty."""


# --------------------------------------------------------------------------
# 1. call_soon chains
# --------------------------------------------------------------------------


def _chains(
    call_soon: Callable[[Callable[[], None]], object],
    stop: Callable[[], None],
    size: int,
    chains: int,
) -> list[Callable[[], None]]:
    """`chains` callbacks that re-schedule themselves with `call_soon` `size // chains` times
    each; the last one to finish calls `stop`. Shared by the loop runs and the baseline, so
    both run the very same callback code."""
    steps = size // chains
    live = chains

    def make_chain() -> Callable[[], None]:
        remaining = steps

        def cb() -> None:
            nonlocal remaining, live
            remaining -= 1
            if remaining:
                call_soon(cb)
            else:
                live -= 1
                if not live:
                    stop()

        return cb

    return [make_chain() for _ in range(chains)]


def _call_soon_chains(loop: asyncio.AbstractEventLoop, size: int, chains: int) -> float:
    call_soon = loop.call_soon
    for cb in _chains(call_soon, loop.stop, size, chains):
        call_soon(cb)
    t0 = perf_counter()
    loop.run_forever()
    return perf_counter() - t0


def _call_soon_chains_baseline(size: int, chains: int) -> float:
    """Baseline: the same callbacks; their ``call_soon(cb)`` is ``deque.append(cb)`` and a
    plain ``while ready: ready.popleft()()`` runs them. Left out: handles, the loop's run
    loop (ready-queue swap, poll, clock), stop."""
    ready: deque = deque()
    call_soon = ready.append
    for cb in _chains(call_soon, _nothing, size, chains):
        call_soon(cb)
    popleft = ready.popleft
    t0 = perf_counter()
    while ready:
        popleft()()
    return perf_counter() - t0


def call_soon_chain(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """One callback that re-schedules itself with call_soon `size` times."""
    return _call_soon_chains(loop, size, 1)


def call_soon_chains_100(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """100 independent self-rescheduling chains, `size` callbacks in total."""
    return _call_soon_chains(loop, size, 100)


def call_soon_chain_baseline(size: int) -> float:
    return _call_soon_chains_baseline(size, 1)


def call_soon_chains_100_baseline(size: int) -> float:
    return _call_soon_chains_baseline(size, 100)


# --------------------------------------------------------------------------
# 2. timer churn
# --------------------------------------------------------------------------


def timer_churn(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """`size` call_later timers with random delays in [0, 10 ms); every other
    one is cancelled right away; runs until all the others have fired."""
    rng = random.Random(12345)
    delays = [rng.random() * 0.010 for _ in range(size)]
    expected = size - size // 2
    fired = 0

    def on_timer() -> None:
        nonlocal fired
        fired += 1
        if fired == expected:
            loop.stop()

    def schedule() -> None:
        call_later = loop.call_later
        handles = [call_later(d, on_timer) for d in delays]
        for h in handles[1::2]:
            h.cancel()

    loop.call_soon(schedule)
    t0 = perf_counter()
    loop.run_forever()
    elapsed = perf_counter() - t0
    assert fired == expected, (fired, expected)
    return elapsed


def timer_churn_baseline(size: int) -> float:
    """Baseline, the callbacks alone: the same delays are drawn (untimed, as in the loop
    run) and ``on_timer`` is called ``size - size // 2`` times from a plain ``for`` loop, in
    no particular order. Left out: ``schedule()``'s comprehension and cancel loop (they only
    exist to call call_later / cancel), timer handles, the heap, cancellation, clock reads,
    the poll's timeout, stop."""
    rng = random.Random(12345)
    delays = [rng.random() * 0.010 for _ in range(size)]
    expected = size - size // 2
    fired = 0

    def on_timer() -> None:
        nonlocal fired
        fired += 1
        if fired == expected:
            _nothing()

    t0 = perf_counter()
    for _ in range(expected):
        on_timer()
    elapsed = perf_counter() - t0
    assert fired == expected and len(delays) == size, (fired, expected)
    return elapsed


# --------------------------------------------------------------------------
# 3. future create / set_result / await
# --------------------------------------------------------------------------


def future_roundtrip(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """`size` x: fut = loop.create_future(); call_soon(fut.set_result, i); await fut."""

    async def main() -> float:
        create_future = loop.create_future
        call_soon = loop.call_soon
        t0 = perf_counter()
        for i in range(size):
            fut = create_future()
            call_soon(fut.set_result, i)
            await fut
        return perf_counter() - t0

    return loop.run_until_complete(main())


def future_roundtrip_baseline(size: int) -> float:
    """Baseline: the same coroutine loop, with ``await _SUSPEND`` (one bare suspension,
    resumed by the trampoline's next ``send(None)``) where the benchmark creates a future,
    schedules its set_result and awaits it. Left out: the future, call_soon and its handle,
    set_result, done callbacks, the task and its wake-up."""

    async def main() -> float:
        t0 = perf_counter()
        for _ in range(size):
            await _SUSPEND
        return perf_counter() - t0

    return _trampoline(main(), deque())


# --------------------------------------------------------------------------
# 4. create_task + gather
# --------------------------------------------------------------------------


async def _trivial(i: int) -> int:
    return i


def task_gather(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """create_task for `size` trivial coroutines, then gather them all."""

    async def main() -> float:
        create_task = loop.create_task
        t0 = perf_counter()
        tasks = [create_task(_trivial(i)) for i in range(size)]
        results = await asyncio.gather(*tasks)
        elapsed = perf_counter() - t0
        assert len(results) == size
        return elapsed

    return loop.run_until_complete(main())


def task_gather_baseline(size: int) -> float:
    """Baseline: the same ``size`` coroutine objects are created and each is run to its end
    by the trampoline (one ``send(None)`` each, ending in StopIteration, caught in Python);
    main then steps aside until they are done. Left out: Task objects, scheduling their first
    step, gather's future and done callbacks, result collection."""
    ready: deque = deque()

    async def main() -> float:
        t0 = perf_counter()
        coros = [_trivial(i) for i in range(size)]
        ready.extend(coros)
        await _wait_others(ready)
        elapsed = perf_counter() - t0
        assert len(coros) == size
        return elapsed

    return _trampoline(main(), ready)


# --------------------------------------------------------------------------
# 5. sleep(0) ping-pong
# --------------------------------------------------------------------------

SLEEP0_TASKS = 1000


def sleep0_pingpong(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """1000 tasks each doing `await asyncio.sleep(0)` size/1000 times
    (`size` sleeps in total); timed from the first create_task to the end."""
    per_task = max(1, size // SLEEP0_TASKS)

    async def worker() -> None:
        sleep = asyncio.sleep
        for _ in range(per_task):
            await sleep(0)

    async def main() -> float:
        t0 = perf_counter()
        await asyncio.gather(*[loop.create_task(worker()) for _ in range(SLEEP0_TASKS)])
        return perf_counter() - t0

    return loop.run_until_complete(main())


def sleep0_pingpong_baseline(size: int) -> float:
    """Baseline: the same 1000 workers, unchanged: ``await asyncio.sleep(0)`` (its Python
    code and its bare ``yield``) runs as in the loop run, and the trampoline resumes each
    worker round-robin. Left out: tasks (creation, each step's call_soon and handle, the
    loop's iterations), gather."""
    per_task = max(1, size // SLEEP0_TASKS)
    ready: deque = deque()

    async def worker() -> None:
        sleep = asyncio.sleep
        for _ in range(per_task):
            await sleep(0)

    async def main() -> float:
        t0 = perf_counter()
        ready.extend([worker() for _ in range(SLEEP0_TASKS)])
        await _wait_others(ready)
        return perf_counter() - t0

    return _trampoline(main(), ready)


# --------------------------------------------------------------------------
# 6. call_soon_threadsafe from another thread
# --------------------------------------------------------------------------


def call_soon_threadsafe(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """A second thread posts `size` callbacks with call_soon_threadsafe;
    timed from the thread's start until the last callback ran on the loop."""
    done = 0

    def cb() -> None:
        nonlocal done
        done += 1
        if done == size:
            loop.stop()

    def producer() -> None:
        post = loop.call_soon_threadsafe
        for _ in range(size):
            post(cb)

    thread = threading.Thread(target=producer)
    # Start the producer only once the loop is running.
    loop.call_soon(thread.start)
    t0 = perf_counter()
    loop.run_forever()
    elapsed = perf_counter() - t0
    thread.join()
    assert done == size, (done, size)
    return elapsed


def call_soon_threadsafe_baseline(size: int) -> float:
    """Baseline, one thread: the producer's loop posts the same callbacks with
    ``deque.append`` (no second thread), then a plain ``while`` loop pops and calls them.
    Left out: everything this row is about: the thread, the cross-thread queue and its
    locking, the loop's wake-up (self-pipe/eventfd) and GIL hand-offs, handles, stop."""
    done = 0

    def cb() -> None:
        nonlocal done
        done += 1
        if done == size:
            _nothing()

    ready: deque = deque()

    def producer() -> None:
        post = ready.append
        for _ in range(size):
            post(cb)

    t0 = perf_counter()
    producer()
    popleft = ready.popleft
    while ready:
        popleft()()
    elapsed = perf_counter() - t0
    assert done == size, (done, size)
    return elapsed


# --------------------------------------------------------------------------
# 7. asyncio.Queue producer / consumer
# --------------------------------------------------------------------------


def queue_pipe(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """`size` items from a producer task to a consumer task through
    asyncio.Queue(maxsize=100)."""

    async def main() -> float:
        q: asyncio.Queue[int | None] = asyncio.Queue(maxsize=100)

        async def producer() -> None:
            put = q.put
            for i in range(size):
                await put(i)
            await put(None)

        async def consumer() -> int:
            get = q.get
            n = 0
            while (await get()) is not None:
                n += 1
            return n

        t0 = perf_counter()
        _, n = await asyncio.gather(producer(), consumer())
        elapsed = perf_counter() - t0
        assert n == size
        return elapsed

    return loop.run_until_complete(main())


def queue_pipe_baseline(size: int) -> float:
    """Baseline: the same producer and consumer coroutines, but their queue is a minimal
    bounded deque (async ``put`` / ``get`` that ``await _SUSPEND`` while it is full / empty,
    re-checking when resumed), stepped by the trampoline. Left out: asyncio.Queue's own
    Python code (its getter/putter futures, _wakeup_next), the tasks and their switches
    through the loop, gather. Unlike the other baselines this one replaces library code
    that no loop changes (asyncio.Queue), so this row's overhead includes that code and its
    floor is above zero."""
    maxsize = 100
    items: deque = deque()
    ready: deque = deque()
    result = []

    async def put(item: int | None) -> None:
        while len(items) >= maxsize:
            await _SUSPEND
        items.append(item)

    async def get() -> int | None:
        while not items:
            await _SUSPEND
        return items.popleft()

    async def producer() -> None:
        for i in range(size):
            await put(i)
        await put(None)

    async def consumer() -> None:
        n = 0
        while (await get()) is not None:
            n += 1
        result.append(n)

    async def main() -> float:
        t0 = perf_counter()
        ready.extend([producer(), consumer()])
        await _wait_others(ready)
        elapsed = perf_counter() - t0
        assert result == [size], (result, size)
        return elapsed

    return _trampoline(main(), ready)


# --------------------------------------------------------------------------
# 8. UDP echo (issue 4): client and server endpoints on the loop under test
# --------------------------------------------------------------------------


def _share(size: int, parts: int, i: int) -> int:
    """Part `i` of `size` operations split as evenly as possible over `parts` peers."""
    return size // parts + (1 if i < size % parts else 0)


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)


def udp_echo(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """`size` 1 KiB datagram round trips through a UDP echo endpoint, 10 clients in
    flight (each re-sends when its echo arrives); every echo is checked."""
    clients = 10
    payload = bytes(range(256)) * 4

    class Client(asyncio.DatagramProtocol):
        def __init__(self, left: int, done: asyncio.Future) -> None:
            self.left = left
            self.done = done

        def connection_made(self, transport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr) -> None:
            assert data == payload
            self.left -= 1
            if self.left:
                self.transport.sendto(payload)
            else:
                self.done.set_result(None)

    async def main() -> float:
        server, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
        addr = server.get_extra_info("sockname")
        pairs = []
        for i in range(clients):
            done = loop.create_future()
            share = _share(size, clients, i)
            pairs.append(
                await loop.create_datagram_endpoint(
                    lambda s=share, d=done: Client(s, d), remote_addr=addr
                )
            )
        t0 = perf_counter()
        for transport, _ in pairs:
            transport.sendto(payload)
        await asyncio.gather(*(proto.done for _, proto in pairs))
        elapsed = perf_counter() - t0
        for transport, _ in pairs:
            transport.close()
        server.close()
        return elapsed

    return loop.run_until_complete(main())


# --------------------------------------------------------------------------
# 9. TLS echo (issue 4): streams over TLS, client and server on the loop
# --------------------------------------------------------------------------


def _tls_contexts():
    import ssl
    import sysconfig
    from pathlib import Path

    # CPython's own test certificate (localhost), shipped with the interpreter's test package.
    stdlib = Path(sysconfig.get_paths()["stdlib"]) / "test"
    for cert in (stdlib / "certdata" / "keycert.pem", stdlib / "keycert.pem"):
        if cert.exists():
            break
    else:
        raise RuntimeError("no test certificate: the interpreter's test package is missing")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert)
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


def tls_echo(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """`size` 1 KiB request/response round trips over TLS streams (create_server +
    open_connection with ssl=), 10 connections in flight; handshakes are not timed."""
    conns = 10
    payload = bytes(range(256)) * 4
    server_ctx, client_ctx = _tls_contexts()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def client(reader, writer, n: int) -> None:
        for _ in range(n):
            writer.write(payload)
            assert await reader.readexactly(len(payload)) == payload
        writer.close()
        await writer.wait_closed()

    async def main() -> float:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        streams = [
            await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx) for _ in range(conns)
        ]
        t0 = perf_counter()
        await asyncio.gather(
            *(client(r, w, _share(size, conns, i)) for i, (r, w) in enumerate(streams))
        )
        elapsed = perf_counter() - t0
        server.close()
        await server.wait_closed()
        return elapsed

    return loop.run_until_complete(main())


# --------------------------------------------------------------------------
# 10. subprocess spawn and wait (issue 4)
# --------------------------------------------------------------------------


def subprocess_spawn(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """`size` children (`true`) started with create_subprocess_exec and waited for,
    20 at a time."""
    import shutil

    true = shutil.which("true") or "/bin/true"
    batch = 20

    async def spawn_and_wait() -> int:
        proc = await asyncio.create_subprocess_exec(true)
        return await proc.wait()

    async def main() -> float:
        t0 = perf_counter()
        left = size
        while left:
            n = min(batch, left)
            codes = await asyncio.gather(*(spawn_and_wait() for _ in range(n)))
            assert codes == [0] * n, codes
            left -= n
        return perf_counter() - t0

    return loop.run_until_complete(main())


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    fn: Callable[[asyncio.AbstractEventLoop, int], float]
    size: int  # full run: ~0.2-1 s on the stock loop (2 noisy cores)
    quick: int  # --quick smoke run
    unit: str  # what one "operation" is
    # The no-loop baseline (pseudo-loop "none"), for the loop-core rows only.
    baseline: Callable[[int], float] | None = None
    # The loop feature the benchmark needs beyond the core ("TLS"): a loop that raises
    # NotImplementedError shows "n/a (no TLS)".
    needs: str | None = None


BENCHMARKS: dict[str, Bench] = {
    "call_soon_chain": Bench(
        call_soon_chain, 500_000, 20_000, "callback", call_soon_chain_baseline
    ),
    "call_soon_chains_100": Bench(
        call_soon_chains_100, 1_000_000, 20_000, "callback", call_soon_chains_100_baseline
    ),
    "timer_churn": Bench(timer_churn, 200_000, 10_000, "timer", timer_churn_baseline),
    "future_roundtrip": Bench(
        future_roundtrip, 200_000, 10_000, "future", future_roundtrip_baseline
    ),
    "task_gather": Bench(task_gather, 100_000, 10_000, "task", task_gather_baseline),
    "sleep0_pingpong": Bench(sleep0_pingpong, 500_000, 10_000, "sleep", sleep0_pingpong_baseline),
    "call_soon_threadsafe": Bench(
        call_soon_threadsafe, 200_000, 10_000, "callback", call_soon_threadsafe_baseline
    ),
    "queue_pipe": Bench(queue_pipe, 800_000, 10_000, "item", queue_pipe_baseline),
    "udp_echo": Bench(udp_echo, 100_000, 2_000, "round trip", needs="UDP"),
    "tls_echo": Bench(tls_echo, 50_000, 1_000, "round trip", needs="TLS"),
    "subprocess_spawn": Bench(subprocess_spawn, 1_000, 50, "child", needs="subprocesses"),
}

# Real loops, in table order: the stock loop, then the peers, then ferroloop.
LOOPS = ("asyncio", "uvloop", "rloop", "ferroloop")
# The pseudo-loop that runs a benchmark's no-loop baseline (Bench.baseline).
NO_LOOP = "none"
# Exit code of a worker whose benchmark the loop does not implement.
EXIT_UNSUPPORTED = 4


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop

        return rloop.new_event_loop()
    if name == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    raise ValueError(f"unknown loop {name!r}; expected one of {', '.join(LOOPS)}")


def loop_version(name: str) -> str:
    if name == "asyncio":
        return f"CPython {sys.version.split()[0]}"
    if name == NO_LOOP:
        return "no event loop (baseline: callbacks from a while loop, coroutines via send)"
    mod = __import__(name)
    version = getattr(mod, "__version__", None)
    if version is None:
        from importlib import metadata

        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "unknown version"
    return str(version)


class Unsupported(Exception):
    """The loop does not implement something the benchmark needs."""

    def __init__(self, short: str, detail: str) -> None:
        super().__init__(short)
        self.short = short  # for the table cell: "no TLS"
        self.detail = detail  # for the footnote: where the NotImplementedError came from


def unsupported(exc: NotImplementedError, needs: str | None) -> Unsupported:
    """Describe a NotImplementedError: "no NEEDS" (or "no FUNC()" when the benchmark
    names no feature), and the function and file:line that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    func = "?"
    if frames:
        last = frames[-1]
        func = last.name
        parts = last.filename.replace("\\", "/").split("/")
        where = f" in {func}() ({'/'.join(parts[-2:])}:{last.lineno})"
    msg = f": {exc}" if str(exc) else ""
    short = f"no {needs}" if needs else f"no {func}()"
    return Unsupported(short, f"{type(exc).__name__}{msg} raised{where}")


def _marked_clock() -> Callable[[], float]:
    """perf_counter that calls os.getppid() right after its first reading and os.getpgrp()
    right before its second: with callgrind's --dump-before=getppid --dump-before=getpgrp,
    the second dump then counts exactly the instructions between t0 and t1."""
    calls = 0

    def clock() -> float:
        nonlocal calls
        calls += 1
        if calls == 1:
            t = perf_counter_real()
            os.getppid()
            return t
        if calls == 2:
            os.getpgrp()
        return perf_counter_real()

    return clock


perf_counter_real = time.perf_counter


def run_one(
    bench: str,
    loop_name: str,
    size: int,
    warmup: int = 0,
    dry: bool = False,
    markers: bool = False,
) -> float:
    """Create the loop, run `warmup` untimed operations, then time `size`.
    With dry=True do everything but call the benchmark (callgrind baseline). Loop "none"
    runs the benchmark's no-loop baseline instead (no loop is created). With markers=True
    the timed run (not the warm-up) calls the callgrind markers (see _marked_clock).
    Raises Unsupported if the loop raises NotImplementedError."""
    global perf_counter
    b = BENCHMARKS[bench]
    if loop_name == NO_LOOP:
        if b.baseline is None:
            raise Unsupported("no baseline", f"{bench} has no no-loop baseline")
        base = b.baseline
        if warmup > 0 and not dry:
            base(warmup)
        gc.collect()
        if dry:
            return 0.0
        if markers:
            perf_counter = _marked_clock()
        try:
            return base(size)
        finally:
            perf_counter = perf_counter_real
    loop = new_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        if warmup > 0 and not dry:
            b.fn(loop, warmup)
        gc.collect()
        if dry:
            return 0.0
        if markers:
            perf_counter = _marked_clock()
        return b.fn(loop, size)
    except NotImplementedError as e:
        raise unsupported(e, b.needs) from e
    finally:
        perf_counter = perf_counter_real
        asyncio.set_event_loop(None)
        loop.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", metavar="LOOP", help="only check that LOOP can be created")
    p.add_argument("bench", nargs="?", choices=sorted(BENCHMARKS))
    p.add_argument("loop", nargs="?", choices=(*LOOPS, NO_LOOP))
    p.add_argument("size", nargs="?", type=int, help="default: the benchmark's full size")
    p.add_argument("--warmup", type=int, default=0, help="operations run first, untimed")
    p.add_argument(
        "--dry", action="store_true", help="create and close the loop but run nothing (baseline)"
    )
    p.add_argument(
        "--markers",
        action="store_true",
        help="call os.getppid() at t0 and os.getpgrp() at t1 of the timed run (callgrind)",
    )
    args = p.parse_args(argv)

    if args.check:
        try:
            if args.check != NO_LOOP:
                new_loop(args.check).close()
            version = loop_version(args.check)
        except Exception as e:  # noqa: BLE001 - report anything that breaks creation
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 3
        print(json.dumps({"loop": args.check, "version": version}))
        return 0

    if not (args.bench and args.loop):
        p.error("BENCH and LOOP are required")
    size = args.size if args.size is not None else BENCHMARKS[args.bench].size
    try:
        elapsed = run_one(args.bench, args.loop, size, args.warmup, args.dry, args.markers)
    except Unsupported as e:
        print(f"unsupported: {e.short}: {e.detail}", file=sys.stderr)
        print(
            json.dumps(
                {"bench": args.bench, "loop": args.loop, "unsupported": e.short, "detail": e.detail}
            )
        )
        return EXIT_UNSUPPORTED
    print(json.dumps({"bench": args.bench, "loop": args.loop, "size": size, "seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
