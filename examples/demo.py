"""The same asyncio program on the stock loop and on ferroloop: what ran, and how fast.

Run it with ``python examples/demo.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import ferroloop

WORKERS = 200
JOBS = 20_000


async def program() -> dict[str, int]:
    """A small job-queue service: producers, a bounded queue, workers, timeouts and a TaskGroup."""
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=100)
    done = 0
    total = 0

    async def worker() -> None:
        nonlocal done, total
        while True:
            job = await queue.get()
            await asyncio.sleep(0)  # yield, as real I/O would
            total += job
            done += 1
            queue.task_done()

    async def producer(start: int, count: int) -> None:
        for job in range(start, start + count):
            await queue.put(job)

    workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    async with asyncio.timeout(60):
        async with asyncio.TaskGroup() as tg:
            for p in range(4):
                tg.create_task(producer(p * (JOBS // 4), JOBS // 4))
        await queue.join()
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    timers_fired = 0

    def tick() -> None:
        nonlocal timers_fired
        timers_fired += 1

    loop = asyncio.get_running_loop()
    for i in range(10_000):
        loop.call_later(i * 1e-6, tick)
    await asyncio.sleep(0.05)
    return {"jobs": done, "sum": total, "timers": timers_fired}


def run_on(name: str, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> float:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        loop_type = type(runner.get_loop())
        t0 = time.perf_counter()
        result = runner.run(program())
        elapsed = time.perf_counter() - t0
    print(
        f"{name:>9}: {loop_type.__module__}.{loop_type.__qualname__:<20} {result}  {elapsed:.3f} s"
    )
    return elapsed


def main() -> None:
    print(f"{WORKERS} workers, {JOBS} jobs through a bounded queue, 10000 timers\n")
    stock = run_on("asyncio", asyncio.new_event_loop)
    ours = run_on("ferroloop", ferroloop.new_event_loop)
    print(f"\nferroloop ran the same program {stock / ours:.2f}x as fast as the stock loop")


if __name__ == "__main__":
    main()
