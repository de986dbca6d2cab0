"""What a ferroloop loop tells about itself: ``loop.metrics()``, timing, slow-callback reports.

The counters are kept natively (src/metrics.rs) and always on; ``metrics()`` turns them into an
immutable ``LoopMetrics``, and two snapshots subtract. ``set_timing(True)`` adds per-callback
durations, loop lag and slow-callback reports (a clock read per callback: off by default, see
bench/README.md for the measured costs). A callback that ran ``slow_callback_duration`` or longer
is reported, with timing on, to the handler ``set_slow_callback_handler()`` installed, as a
``SlowCallback`` that names what ran: for a task step the task, its coroutine and its await
stack; for a protocol callback the protocol's method and the transport's peer.

``FERROLOOP_STATS=1`` (what ``python -m ferroloop --stats`` sets) turns timing on in every
ferroloop loop of the process and prints a summary of each on stderr at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import time
import weakref
from asyncio import base_events, format_helpers
from dataclasses import dataclass, fields

from ._ferroloop import LoopCore, _histogram_bounds

__all__ = ["Histogram", "LoopMetrics", "SlowCallback"]

_BOUNDS: list[float] = _histogram_bounds()

# How many of the slowest callbacks each loop keeps for the --stats summary.
_KEEP_SLOWEST = 5


@dataclass(frozen=True, slots=True)
class Histogram:
    """A distribution of durations in seconds: fixed buckets, each value known within 12.5 %.

    ``buckets`` holds ``(index, count)`` for the non-empty buckets; ``percentile(q)`` answers
    with the upper bound of the bucket holding the q-quantile (never above ``max``).
    """

    count: int = 0
    total: float = 0.0
    max: float = 0.0
    buckets: tuple[tuple[int, int], ...] = ()

    @classmethod
    def _from_raw(cls, raw: dict) -> Histogram:
        return cls(raw["count"], raw["sum_ns"] * 1e-9, raw["max_ns"] * 1e-9, tuple(raw["buckets"]))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-quantile (0 <= q <= 1), 0.0 when nothing was recorded."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be between 0 and 1, got {q!r}")
        if not self.count:
            return 0.0
        rank = max(1, round(q * self.count))
        seen = 0
        for index, n in self.buckets:
            seen += n
            if seen >= rank:
                return min(_BOUNDS[index], self.max)
        return self.max

    @property
    def p50(self) -> float:
        return self.percentile(0.5)

    @property
    def p90(self) -> float:
        return self.percentile(0.9)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    def __sub__(self, other: Histogram) -> Histogram:
        if not isinstance(other, Histogram):
            return NotImplemented
        before = dict(other.buckets)
        buckets = tuple(
            (i, n - before.get(i, 0)) for i, n in self.buckets if n - before.get(i, 0) > 0
        )
        # The largest value of the interval is only known to its bucket (and to the overall max).
        top = min(_BOUNDS[buckets[-1][0]], self.max) if buckets else 0.0
        return Histogram(self.count - other.count, self.total - other.total, top, buckets)

    def __repr__(self) -> str:
        return (
            f"Histogram(count={self.count}, p50={self.p50:.6f}, p90={self.p90:.6f}, "
            f"p99={self.p99:.6f}, max={self.max:.6f})"
        )


# Fields that are levels at the time of the snapshot, not totals: `b - a` keeps b's.
_LEVELS = frozenset(
    {
        "time",
        "timers_pending",
        "ready_queue_depth",
        "ready_queue_max",
        "fds_watched",
        "transports_open",
        "servers_open",
        "timing",
    }
)


@dataclass(frozen=True, slots=True)
class LoopMetrics:
    """A snapshot of one loop's counters; ``b - a`` is the activity between two snapshots.

    Totals since the loop was made: ``iterations``, ``callbacks`` (ready-queue entries run:
    handles, task steps, native transports' readiness), ``io_events`` (fd readiness events
    dispatched), ``timers_fired``, ``bytes_read``/``bytes_written`` (by the native transports),
    ``poll_seconds`` (blocked in the poll waiting for I/O or a timer) and ``busy_seconds`` (inside
    ``run_forever`` and not blocked). Levels at ``time`` (the loop's clock): ``timers_pending``,
    ``ready_queue_depth``, ``ready_queue_max`` (the longest batch since start), ``fds_watched``,
    ``transports_open``, ``servers_open``, ``timing``. With timing on: ``callback_duration`` and
    ``lag`` histograms and ``slow_callbacks``; otherwise None.
    """

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
    def run_seconds(self) -> float:
        """Seconds inside ``run_forever``: busy plus blocked in the poll."""
        return self.busy_seconds + self.poll_seconds

    @property
    def busy_ratio(self) -> float:
        """The share of ``run_seconds`` spent running callbacks and the loop's own work."""
        run = self.run_seconds
        return self.busy_seconds / run if run > 0 else 0.0

    def __sub__(self, other: LoopMetrics) -> LoopMetrics:
        if not isinstance(other, LoopMetrics):
            return NotImplemented
        values = {}
        for f in fields(self):
            name = f.name
            mine, theirs = getattr(self, name), getattr(other, name)
            if name in _LEVELS or mine is None:
                values[name] = mine
            elif theirs is None:
                # Timing was turned on between the two: all of it is in the interval.
                values[name] = mine
            else:
                values[name] = mine - theirs
        return LoopMetrics(**values)

    def as_dict(self) -> dict:
        """The fields and ``busy_ratio``, histograms as dicts (for logging or JSON)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Histogram):
                value = {
                    "count": value.count,
                    "total": value.total,
                    "mean": value.mean,
                    "p50": value.p50,
                    "p90": value.p90,
                    "p99": value.p99,
                    "max": value.max,
                }
            out[f.name] = value
        out["busy_ratio"] = self.busy_ratio
        return out


@dataclass(frozen=True, slots=True)
class SlowCallback:
    """One callback that ran ``slow_callback_duration`` or longer (timing on).

    ``kind`` is ``"task"`` (a task's step: ``task``, ``task_name``, ``coro`` and ``stack`` say
    which and where it is suspended now, right after the slow part), ``"protocol"`` (a transport's
    readiness: ``protocol``, ``method`` and ``peer``) or ``"callback"`` (anything else:
    ``callback``). ``stack`` lists the awaits from the task's coroutine down, innermost last, as
    ``"qualname (file:line)"``; on Python 3.14+ it comes from ``asyncio.capture_call_graph``,
    which also gives ``call_graph`` (who awaits the task, formatted). ``started`` is on the loop's
    clock. ``handle`` is the handle that ran (None for a native transport's readiness).
    """

    duration: float
    started: float
    kind: str
    description: str
    handle: object = None
    callback: object = None
    task: asyncio.Task | None = None
    task_name: str | None = None
    coro: object = None
    stack: tuple[str, ...] = ()
    call_graph: str | None = None
    protocol: object = None
    method: str | None = None
    peer: object = None
    transport: object = None

    def __str__(self) -> str:
        return f"Executing {self.description} took {self.duration:.3f} seconds"


def _frame_line(frame, lineno=None) -> str:
    code = frame.f_code
    line = lineno if lineno is not None else frame.f_lineno
    return f"{code.co_qualname} ({code.co_filename}:{line})"


def _await_stack(task) -> tuple[tuple[str, ...], str | None]:
    """The task's await chain from its coroutine down, and 3.14's formatted call graph."""
    capture = getattr(asyncio, "capture_call_graph", None)
    if capture is not None:
        try:
            graph = capture(task)
        except Exception:
            graph = None
        if graph is not None:
            # capture_call_graph lists the innermost frame first.
            stack = tuple(_frame_line(e.frame) for e in reversed(graph.call_stack))
            try:
                text = asyncio.format_call_graph(task)
            except Exception:
                text = None
            return stack, text
    # Task.get_stack() gives the task's own coroutine frame only; the awaits under it are
    # followed through cr_await / gi_yieldfrom, as 3.14's call graph does.
    lines = []
    obj = task.get_coro()
    for _ in range(100):
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is None:
            break
        lines.append(_frame_line(frame))
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        if obj is None:
            break
    return tuple(lines), None


_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)


def _where(stack: tuple[str, ...]) -> str:
    """The innermost await outside asyncio itself (a sleep's own frames say nothing)."""
    for line in reversed(stack):
        if f"({_ASYNCIO_DIR}{os.sep}" not in line:
            return line
    return stack[-1]


def _peer(transport):
    try:
        return transport.get_extra_info("peername")
    except Exception:
        return None


def _protocol_method(protocol, read: bool) -> tuple[object, str]:
    # Behind ferroloop's TLS protocol, the application's protocol is the one that ran.
    app = getattr(protocol, "_app_protocol", None)
    if app is not None:
        protocol = app
    if not read:
        return protocol, "resume_writing"
    if isinstance(protocol, asyncio.BufferedProtocol):
        return protocol, "buffer_updated"
    return protocol, "data_received"


def _describe_task(task) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or repr(coro)
    return f"task {task.get_name()!r} step (coro={name}())"


def make_report(loop, what, kind: str, duration: float, started: float) -> SlowCallback:
    """The report for what `run_batch_timed` (src/metrics.rs) found slow."""
    if kind in ("read", "write"):
        transport = what
        protocol, method = _protocol_method(transport.get_protocol(), kind == "read")
        peer = _peer(transport)
        return SlowCallback(
            duration,
            started,
            "protocol",
            f"{type(protocol).__qualname__}.{method}() (peer={peer!r})",
            protocol=protocol,
            method=method,
            peer=peer,
            transport=transport,
        )
    handle = what
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        stack, graph = _await_stack(owner)
        return SlowCallback(
            duration,
            started,
            "task",
            _describe_task(owner) + (f" at {_where(stack)}" if stack else ""),
            handle=handle,
            callback=callback,
            task=owner,
            task_name=owner.get_name(),
            coro=owner.get_coro(),
            stack=stack,
            call_graph=graph,
        )
    if isinstance(owner, asyncio.BaseTransport) and getattr(callback, "__name__", "") in (
        "_read_ready",
        "_write_ready",
    ):
        # asyncio's own transports (pipes, Unix datagrams) watch their fd through add_reader.
        read = callback.__name__ == "_read_ready"
        protocol, method = _protocol_method(owner.get_protocol(), read)
        peer = _peer(owner)
        return SlowCallback(
            duration,
            started,
            "protocol",
            f"{type(protocol).__qualname__}.{method}() (peer={peer!r})",
            handle=handle,
            callback=callback,
            protocol=protocol,
            method=method,
            peer=peer,
            transport=owner,
        )
    args = getattr(handle, "_args", None) or ()
    try:
        description = format_helpers._format_callback_source(callback, args)
    except Exception:
        description = repr(callback)
    return SlowCallback(
        duration, started, "callback", description, handle=handle, callback=callback
    )


def default_slow_callback_handler(loop, report: SlowCallback) -> None:
    """One warning line through asyncio's logger, as asyncio's debug mode logs a slow callback."""
    base_events.logger.warning("%s", report)


class MetricsMixin:
    """``metrics()``, timing and slow-callback reports, for ``ferroloop.Loop``."""

    _slow_callback_handler = None
    _slowest: list | None = None

    def metrics(self) -> LoopMetrics:
        """An immutable snapshot of the loop's counters (see ``LoopMetrics``)."""
        raw = self._metrics_raw()
        transports = 0
        for transport in list(self._transports.values()):
            try:
                if not transport.is_closing():
                    transports += 1
            except Exception:
                pass
        servers = sum(1 for s in list(self._metrics_servers) if s._sockets is not None)
        timing = raw["slow_callbacks"] is not None
        return LoopMetrics(
            time=raw["time"],
            iterations=raw["iterations"],
            callbacks=raw["callbacks"],
            io_events=raw["io_events"],
            timers_fired=raw["timers_fired"],
            timers_pending=raw["timers_pending"],
            ready_queue_depth=raw["ready_now"],
            ready_queue_max=raw["ready_max"],
            fds_watched=raw["fds_watched"],
            transports_open=transports,
            servers_open=servers,
            bytes_read=raw["bytes_read"],
            bytes_written=raw["bytes_written"],
            poll_seconds=raw["blocked"],
            busy_seconds=max(0.0, raw["running"] - raw["blocked"]),
            timing=timing,
            slow_callbacks=raw["slow_callbacks"],
            callback_duration=Histogram._from_raw(raw["durations"]) if timing else None,
            lag=Histogram._from_raw(raw["lag"]) if timing else None,
        )

    def set_timing(self, enabled: bool) -> None:
        """Time every callback: durations, loop lag and slow-callback reports.

        Off by default: it reads the clock once per callback (bench/README.md has the cost).
        Turning it off forgets the histograms and the slow-callback count.
        """
        LoopCore._set_timing(self, bool(enabled))

    def set_slow_callback_handler(self, handler) -> None:
        """Call ``handler(loop, report)`` for each callback that ran ``slow_callback_duration``
        or longer, with a ``SlowCallback`` report; None restores the default, which logs one
        warning through asyncio's logger. Reports need timing, so this turns it on.
        Works outside debug mode."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._slow_callback_handler = handler
        LoopCore._set_timing(self, True)

    def get_slow_callback_handler(self):
        return self._slow_callback_handler

    def _report_slow_callback(self, what, kind, duration, started):
        try:
            report = make_report(self, what, kind, duration, started)
        except Exception as exc:
            self.call_exception_handler(
                {"message": "Error while describing a slow callback", "exception": exc}
            )
            return
        slowest = self._slowest
        if slowest is None:
            slowest = self._slowest = []
        if len(slowest) < _KEEP_SLOWEST or duration > slowest[-1][0]:
            slowest.append((duration, str(report)))
            slowest.sort(key=lambda entry: -entry[0])
            del slowest[_KEEP_SLOWEST:]
        handler = self._slow_callback_handler or default_slow_callback_handler
        try:
            handler(self, report)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.call_exception_handler(
                {
                    "message": "Unhandled error in the slow callback handler",
                    "exception": exc,
                    "handler": handler,
                }
            )


# -- FERROLOOP_STATS: a summary of every loop at exit ---------------------------------------------

_stats_loops: weakref.WeakSet = weakref.WeakSet()
_stats_done: list[tuple[int, LoopMetrics, list, float]] = []
_stats_registered = False
_stats_count = 0


def stats_enabled() -> bool:
    return os.environ.get("FERROLOOP_STATS", "") not in ("", "0")


def loop_created(loop) -> None:
    """Loop.__init__'s hook: with FERROLOOP_STATS set, time the loop and report it at exit."""
    global _stats_registered, _stats_count
    if not stats_enabled():
        return
    LoopCore._set_timing(loop, True)
    _stats_count += 1
    loop._stats_number = _stats_count
    _stats_loops.add(loop)
    if not _stats_registered:
        _stats_registered = True
        atexit.register(print_stats)
        # Forked multiprocessing children leave through os._exit, after running these.
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            mp_util.Finalize(None, print_stats, exitpriority=0)


def loop_closed(loop) -> None:
    """Loop.close's hook: keep the final numbers of a loop whose stats are reported."""
    if loop in _stats_loops:
        _stats_loops.discard(loop)
        _stats_done.append(_final(loop))


def _final(loop) -> tuple[int, LoopMetrics, list, float]:
    return (
        loop._stats_number,
        loop.metrics(),
        list(loop._slowest or ()),
        loop.slow_callback_duration,
    )


def _forget_in_child() -> None:
    """A forked child reports its own loops, not the parent's it inherited."""
    global _stats_registered, _stats_loops
    _stats_done.clear()
    _stats_loops = weakref.WeakSet()
    # Registered again with the child's first loop: multiprocessing clears its finalizers in a
    # child it starts, and that child leaves through os._exit.
    _stats_registered = False


os.register_at_fork(after_in_child=_forget_in_child)


def _ms(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_summary(number: int, m: LoopMetrics, slowest: list, threshold: float) -> str:
    lines = [
        f"  loop {number}: busy {m.busy_ratio:.1%} of {_ms(m.run_seconds)} running"
        f" ({_ms(m.busy_seconds)} busy, {_ms(m.poll_seconds)} waiting in the poll);"
        f" {m.iterations:,} iterations, {m.callbacks:,} callbacks, {m.io_events:,} I/O events,"
        f" {m.timers_fired:,} timers fired",
        f"    ready queue max {m.ready_queue_max:,}; read {_size(m.bytes_read)},"
        f" written {_size(m.bytes_written)}",
    ]
    for label, h in (("callback duration", m.callback_duration), ("loop lag", m.lag)):
        if h is not None and h.count:
            lines.append(
                f"    {label:<17} p50 {_ms(h.p50)}  p90 {_ms(h.p90)}  p99 {_ms(h.p99)}"
                f"  max {_ms(h.max)}"
            )
    if m.slow_callbacks is not None:
        lines.append(f"    slow callbacks (>= {_ms(threshold)}): {m.slow_callbacks:,}")
        for duration, text in slowest:
            lines.append(f"      {_ms(duration):>9}  {text}")
    return "\n".join(lines)


def print_stats() -> None:
    """The summary FERROLOOP_STATS asks for, once per process, on stderr."""
    global _stats_registered
    done = list(_stats_done)
    _stats_done.clear()
    for loop in list(_stats_loops):
        try:
            done.append(_final(loop))
        except Exception:
            pass
    _stats_loops.clear()
    if not done:
        return
    done.sort(key=lambda entry: entry[0])
    out = [f"ferroloop stats (pid {os.getpid()}, {len(done)} loop{'s' * (len(done) != 1)}):"]
    for number, m, slowest, threshold in done:
        out.append(format_summary(number, m, slowest, threshold))
    try:
        sys.stderr.write("\n".join(out) + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def _wall_ns(loop_time: float) -> int:
    """A time on the loop's clock (``time.monotonic()``) as nanoseconds since the epoch."""
    return time.time_ns() - int((time.monotonic() - loop_time) * 1e9)
