"""Event-loop micro-benchmarks shared by bench/run.py and bench/callgrind.sh.

Every benchmark is ``fn(loop, size) -> seconds``: it times only the hot part
(the loop is created beforehand by the caller) and performs ``size``
operations, so ``seconds / size`` is the time per operation.

Run as a script it is the per-process worker used by run.py::

    python bench/benchmarks.py BENCH LOOP [SIZE] [--warmup N] [--dry]

which prints one JSON object on stdout, and::

    python bench/benchmarks.py --check LOOP

which prints the loop's version info (exit 3 if it cannot be imported).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

perf_counter = time.perf_counter


# --------------------------------------------------------------------------
# 1. call_soon chains
# --------------------------------------------------------------------------


def _call_soon_chains(loop: asyncio.AbstractEventLoop, size: int, chains: int) -> float:
    steps = size // chains
    live = chains
    call_soon = loop.call_soon

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
                    loop.stop()

        return cb

    for cb in [make_chain() for _ in range(chains)]:
        call_soon(cb)
    t0 = perf_counter()
    loop.run_forever()
    return perf_counter() - t0


def call_soon_chain(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """One callback that re-schedules itself with call_soon `size` times."""
    return _call_soon_chains(loop, size, 1)


def call_soon_chains_100(loop: asyncio.AbstractEventLoop, size: int) -> float:
    """100 independent self-rescheduling chains, `size` callbacks in total."""
    return _call_soon_chains(loop, size, 100)


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


BENCHMARKS: dict[str, Bench] = {
    "call_soon_chain": Bench(call_soon_chain, 500_000, 20_000, "callback"),
    "call_soon_chains_100": Bench(call_soon_chains_100, 1_000_000, 20_000, "callback"),
    "timer_churn": Bench(timer_churn, 200_000, 10_000, "timer"),
    "future_roundtrip": Bench(future_roundtrip, 200_000, 10_000, "future"),
    "task_gather": Bench(task_gather, 100_000, 10_000, "task"),
    "sleep0_pingpong": Bench(sleep0_pingpong, 500_000, 10_000, "sleep"),
    "call_soon_threadsafe": Bench(call_soon_threadsafe, 200_000, 10_000, "callback"),
    "queue_pipe": Bench(queue_pipe, 800_000, 10_000, "item"),
    "udp_echo": Bench(udp_echo, 100_000, 2_000, "round trip"),
    "tls_echo": Bench(tls_echo, 50_000, 1_000, "round trip"),
    "subprocess_spawn": Bench(subprocess_spawn, 1_000, 50, "child"),
}

LOOPS = ("asyncio", "uvloop", "ferroloop")


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    raise ValueError(f"unknown loop {name!r}; expected one of {', '.join(LOOPS)}")


def loop_version(name: str) -> str:
    if name == "asyncio":
        return f"CPython {sys.version.split()[0]}"
    mod = __import__(name)
    return str(getattr(mod, "__version__", "unknown version"))


def run_one(bench: str, loop_name: str, size: int, warmup: int = 0, dry: bool = False) -> float:
    """Create the loop, run `warmup` untimed operations, then time `size`.
    With dry=True do everything but call the benchmark (callgrind baseline)."""
    fn = BENCHMARKS[bench].fn
    loop = new_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        if warmup > 0 and not dry:
            fn(loop, warmup)
        gc.collect()
        if dry:
            return 0.0
        return fn(loop, size)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", metavar="LOOP", help="only check that LOOP can be created")
    p.add_argument("bench", nargs="?", choices=sorted(BENCHMARKS))
    p.add_argument("loop", nargs="?", choices=LOOPS)
    p.add_argument("size", nargs="?", type=int, help="default: the benchmark's full size")
    p.add_argument("--warmup", type=int, default=0, help="operations run first, untimed")
    p.add_argument(
        "--dry", action="store_true", help="create and close the loop but run nothing (baseline)"
    )
    args = p.parse_args(argv)

    if args.check:
        try:
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
    elapsed = run_one(args.bench, args.loop, size, args.warmup, args.dry)
    print(json.dumps({"bench": args.bench, "loop": args.loop, "size": size, "seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
