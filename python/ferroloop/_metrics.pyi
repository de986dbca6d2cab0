"""ferroloop's loop metrics, timing and slow-callback reports (see _metrics.py)."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = ["Histogram", "LoopMetrics", "SlowCallback"]

@dataclass(frozen=True, slots=True)
class Histogram:
    count: int = 0
    total: float = 0.0
    max: float = 0.0
    buckets: tuple[tuple[int, int], ...] = ()
    @property
    def mean(self) -> float: ...
    def percentile(self, q: float) -> float: ...
    @property
    def p50(self) -> float: ...
    @property
    def p90(self) -> float: ...
    @property
    def p99(self) -> float: ...
    def __sub__(self, other: Histogram) -> Histogram: ...

@dataclass(frozen=True, slots=True)
class LoopMetrics:
    time: float
    iterations: int
    callbacks: int
    io_events: int
    timers_fired: int
    timers_pending: int
    ready_queue_depth: int
    ready_queue_max: int
    fds_watched: int
    transports_open: int
    servers_open: int
    bytes_read: int
    bytes_written: int
    poll_seconds: float
    busy_seconds: float
    timing: bool = False
    slow_callbacks: int | None = None
    callback_duration: Histogram | None = None
    lag: Histogram | None = None
    @property
    def run_seconds(self) -> float: ...
    @property
    def busy_ratio(self) -> float: ...
    def __sub__(self, other: LoopMetrics) -> LoopMetrics: ...
    def as_dict(self) -> dict[str, Any]: ...

@dataclass(frozen=True, slots=True)
class SlowCallback:
    duration: float
    started: float
    kind: str
    description: str
    handle: object = None
    callback: object = None
    task: asyncio.Task[Any] | None = None
    task_name: str | None = None
    coro: object = None
    stack: tuple[str, ...] = ()
    call_graph: str | None = None
    protocol: object = None
    method: str | None = None
    peer: object = None
    transport: object = None

_SlowCallbackHandler: TypeAlias = Callable[[Any, SlowCallback], object]

def make_report(
    loop: Any, what: object, kind: str, duration: float, started: float
) -> SlowCallback: ...
def default_slow_callback_handler(loop: Any, report: SlowCallback) -> None: ...

class MetricsMixin:
    def metrics(self) -> LoopMetrics: ...
    def set_timing(self, enabled: bool) -> None: ...
    def set_slow_callback_handler(self, handler: _SlowCallbackHandler | None) -> None: ...
    def get_slow_callback_handler(self) -> _SlowCallbackHandler | None: ...

def stats_enabled() -> bool: ...
def loop_created(loop: Any) -> None: ...
def loop_closed(loop: Any) -> None: ...
def format_summary(
    number: int, m: LoopMetrics, slowest: list[tuple[float, str]], threshold: float
) -> str: ...
def print_stats() -> None: ...
