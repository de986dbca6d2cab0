"""ferroloop's loop metrics, timing and slow-callback reports (README: "Seeing inside the loop")."""

from __future__ import annotations

import asyncio
import time

import ferroloop


def on_slow(loop: object, report: ferroloop.SlowCallback) -> None:
    where = report.stack[-1] if report.stack else ""
    print(f"slow: {report.kind} {report.task_name or report.description} {where}")


async def worker() -> None:
    await asyncio.sleep(0)
    time.sleep(0.06)  # blocks the loop: reported


async def main() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, ferroloop.Loop)
    loop.slow_callback_duration = 0.05
    loop.set_slow_callback_handler(on_slow)
    before: ferroloop.LoopMetrics = loop.metrics()
    await asyncio.create_task(worker(), name="worker-1")
    await asyncio.sleep(0.01)
    m = loop.metrics() - before
    duration: ferroloop.Histogram | None = m.callback_duration
    print(f"busy {m.busy_ratio:.0%}, {m.callbacks} callbacks, {m.timers_fired} timers")
    if duration is not None:
        print(f"callbacks p50 {duration.p50 * 1e6:.0f} us, max {duration.max * 1e3:.1f} ms")


if __name__ == "__main__":
    ferroloop.run(main())
