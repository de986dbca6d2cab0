"""OpenTelemetry for a ferroloop loop: its metrics as observable instruments, slow callbacks as
span events.

Optional: ``opentelemetry-api`` is imported only when this module is (``pip install
opentelemetry-api``, plus an SDK and an exporter to send anything anywhere)::

    from opentelemetry import metrics
    import ferroloop.opentelemetry

    loop = asyncio.get_running_loop()
    ferroloop.opentelemetry.instrument(loop, metrics.get_meter("my-service"))

The instruments (names and units in OpenTelemetry's semantic-convention style; each observation
carries ``ferroloop.loop.name``):

==================================== ====================== ================ =======================
name                                 kind                   unit             attributes
==================================== ====================== ================ =======================
ferroloop.loop.iterations            counter                {iteration}
ferroloop.loop.callbacks             counter                {callback}
ferroloop.loop.io.events             counter                {event}
ferroloop.loop.timers.fired          counter                {timer}
ferroloop.loop.timers.pending        up-down counter        {timer}
ferroloop.loop.ready_queue.depth     gauge                  {callback}
ferroloop.loop.ready_queue.max       gauge                  {callback}
ferroloop.loop.fds                   up-down counter        {fd}
ferroloop.loop.transports            up-down counter        {transport}
ferroloop.loop.servers               up-down counter        {server}
ferroloop.loop.io                    counter                By               network.io.direction
ferroloop.loop.time                  counter                s                ferroloop.loop.state
ferroloop.loop.utilization           gauge                  1
ferroloop.loop.callbacks.slow        counter                {callback}
ferroloop.loop.callback.duration     gauge                  s                ferroloop.quantile
ferroloop.loop.lag                   gauge                  s                ferroloop.quantile
==================================== ====================== ================ =======================

``network.io.direction`` is ``receive`` or ``transmit``; ``ferroloop.loop.state`` is ``busy`` or
``idle`` (blocked in the poll). The gauges describe the interval since the previous collection:
``utilization`` is its busy ratio, and the duration and lag gauges give the 0.5, 0.9 and 0.99
quantiles and the maximum (``ferroloop.quantile`` = ``"0.5"``, ``"0.9"``, ``"0.99"``, ``"1"``) of
the callbacks that ran in it. OpenTelemetry has no asynchronous histogram, and recording every
callback into a synchronous one would cost a Python call per callback; hence quantile gauges. The
last three need timing (``instrument(..., timing=True)``, the default, turns it on).

Slow callbacks: with ``spans=True`` each report becomes an event named
``ferroloop.slow_callback`` on the span current where the callback ran (a task's span); with a
``tracer`` and no such span, a span of that name covering the callback. The report is then passed
on to the handler set before (by default, asyncio's logger gets its line).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation, get_meter

from . import __version__
from ._metrics import LoopMetrics, SlowCallback, _wall_ns, default_slow_callback_handler

__all__ = ["Instrumentation", "instrument"]

# One collection calls every instrument's callback in turn: they share the snapshot taken by the
# first, if it is this recent.
_SAME_COLLECTION = 0.05

_QUANTILES = (("0.5", 0.5), ("0.9", 0.9), ("0.99", 0.99), ("1", 1.0))


class Instrumentation:
    """What ``instrument()`` set up for one loop; ``close()`` stops it."""

    def __init__(self, loop, meter: Meter, name: str, tracer, spans: bool):
        self.loop = loop
        self.name = name
        self.tracer = tracer
        self._attrs = {"ferroloop.loop.name": name}
        self._closed = False
        self._snapshot: LoopMetrics | None = None
        self._taken = 0.0
        self._previous: LoopMetrics | None = None
        self._interval: LoopMetrics | None = None
        self._handler = None
        self._spans = spans
        if spans:
            self._handler = loop.get_slow_callback_handler()
            loop.set_slow_callback_handler(self._on_slow_callback)
        self._register(meter)

    # -- metrics -----------------------------------------------------------------------------

    def _current(self) -> tuple[LoopMetrics, LoopMetrics] | None:
        if self._closed or self.loop.is_closed():
            return None
        now = time.monotonic()
        if self._snapshot is None or now - self._taken > _SAME_COLLECTION:
            snapshot = self.loop.metrics()
            self._interval = snapshot - self._previous if self._previous else snapshot
            self._previous = self._snapshot = snapshot
            self._taken = now
        assert self._interval is not None
        return self._snapshot, self._interval

    def _value(self, field: str):
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            current = self._current()
            if current is None:
                return []
            value = getattr(current[0], field)
            return [] if value is None else [Observation(value, self._attrs)]

        return observe

    def _io(self, options: CallbackOptions) -> Iterable[Observation]:
        current = self._current()
        if current is None:
            return []
        m = current[0]
        return [
            Observation(m.bytes_read, {**self._attrs, "network.io.direction": "receive"}),
            Observation(m.bytes_written, {**self._attrs, "network.io.direction": "transmit"}),
        ]

    def _time(self, options: CallbackOptions) -> Iterable[Observation]:
        current = self._current()
        if current is None:
            return []
        m = current[0]
        return [
            Observation(m.busy_seconds, {**self._attrs, "ferroloop.loop.state": "busy"}),
            Observation(m.poll_seconds, {**self._attrs, "ferroloop.loop.state": "idle"}),
        ]

    def _utilization(self, options: CallbackOptions) -> Iterable[Observation]:
        current = self._current()
        return [] if current is None else [Observation(current[1].busy_ratio, self._attrs)]

    def _quantiles(self, field: str):
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            current = self._current()
            if current is None:
                return []
            h = getattr(current[1], field)
            if h is None or not h.count:
                return []
            return [
                Observation(h.percentile(q), {**self._attrs, "ferroloop.quantile": label})
                for label, q in _QUANTILES
            ]

        return observe

    def _register(self, meter: Meter) -> None:
        p = "ferroloop.loop"
        counters = (
            ("iterations", "iterations", "{iteration}", "Loop iterations"),
            ("callbacks", "callbacks", "{callback}", "Ready-queue entries run"),
            ("io.events", "io_events", "{event}", "fd readiness events dispatched"),
            ("timers.fired", "timers_fired", "{timer}", "Timers whose callback was queued"),
            ("callbacks.slow", "slow_callbacks", "{callback}", "Callbacks past the threshold"),
        )
        for name, field, unit, description in counters:
            meter.create_observable_counter(
                f"{p}.{name}", [self._value(field)], unit=unit, description=description
            )
        levels = (
            ("timers.pending", "timers_pending", "{timer}", "Timers scheduled, not cancelled"),
            ("fds", "fds_watched", "{fd}", "File descriptors watched"),
            ("transports", "transports_open", "{transport}", "Socket transports open"),
            ("servers", "servers_open", "{server}", "Servers open"),
        )
        for name, field, unit, description in levels:
            meter.create_observable_up_down_counter(
                f"{p}.{name}", [self._value(field)], unit=unit, description=description
            )
        meter.create_observable_gauge(
            f"{p}.ready_queue.depth",
            [self._value("ready_queue_depth")],
            unit="{callback}",
            description="Callbacks waiting in the ready queue",
        )
        meter.create_observable_gauge(
            f"{p}.ready_queue.max",
            [self._value("ready_queue_max")],
            unit="{callback}",
            description="The longest batch of ready callbacks since the loop was made",
        )
        meter.create_observable_counter(
            f"{p}.io", [self._io], unit="By", description="Bytes moved by native transports"
        )
        meter.create_observable_counter(
            f"{p}.time",
            [self._time],
            unit="s",
            description="Time inside run_forever, busy or blocked in the poll (idle)",
        )
        meter.create_observable_gauge(
            f"{p}.utilization",
            [self._utilization],
            unit="1",
            description="Busy share of the time since the previous collection",
        )
        meter.create_observable_gauge(
            f"{p}.callback.duration",
            [self._quantiles("callback_duration")],
            unit="s",
            description="Callback duration quantiles since the previous collection",
        )
        meter.create_observable_gauge(
            f"{p}.lag",
            [self._quantiles("lag")],
            unit="s",
            description="How late callbacks ran (quantiles since the previous collection)",
        )

    # -- slow callbacks ----------------------------------------------------------------------

    def _on_slow_callback(self, loop, report: SlowCallback) -> None:
        if not self._closed:
            self.record_slow_callback(report)
        handler = self._handler or default_slow_callback_handler
        handler(loop, report)

    def record_slow_callback(self, report: SlowCallback) -> None:
        """Records ``report`` as a span event (or span): what the slow-callback handler does."""
        attributes = _attributes(report)
        start = _wall_ns(report.started)
        end = start + int(report.duration * 1e9)
        span = None
        context = getattr(report.handle, "get_context", None)
        if context is not None:
            try:
                span = context().run(trace.get_current_span)
            except Exception:
                span = None
        if span is None:
            span = trace.get_current_span()
        if span.is_recording():
            span.add_event("ferroloop.slow_callback", attributes, timestamp=end)
        elif self.tracer is not None:
            made = self.tracer.start_span(
                "ferroloop.slow_callback", attributes=attributes, start_time=start
            )
            made.end(end_time=end)

    def close(self) -> None:
        """Stop observing (the instruments then report nothing) and give back the loop's
        slow-callback handler."""
        if self._closed:
            return
        self._closed = True
        if self._spans and self.loop.get_slow_callback_handler() == self._on_slow_callback:
            self.loop.set_slow_callback_handler(self._handler)


def _attributes(report: SlowCallback) -> dict:
    attributes: dict = {
        "ferroloop.callback.duration": report.duration,
        "ferroloop.callback.kind": report.kind,
        "ferroloop.callback.description": report.description,
    }
    if report.task_name is not None:
        attributes["ferroloop.task.name"] = report.task_name
    if report.coro is not None:
        attributes["ferroloop.task.coro"] = getattr(report.coro, "__qualname__", repr(report.coro))
    if report.stack:
        attributes["code.stacktrace"] = "\n".join(report.stack)
    if report.method is not None:
        attributes["ferroloop.protocol.method"] = report.method
    peer = report.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        attributes["network.peer.address"] = str(peer[0])
        attributes["network.peer.port"] = int(peer[1])
    elif peer:
        attributes["network.peer.address"] = str(peer)
    return attributes


def instrument(
    loop,
    meter: Meter | None = None,
    *,
    name: str | None = None,
    tracer=None,
    spans: bool = True,
    timing: bool = True,
) -> Instrumentation:
    """Register ``loop``'s metrics on ``meter`` (default: the global provider's meter
    ``"ferroloop"``) and, with ``spans``, record its slow callbacks as span events.

    ``name`` is the ``ferroloop.loop.name`` attribute of every observation (default: the loop's
    id). ``timing`` turns the loop's timing on, which the duration, lag and slow-callback
    instruments need (see ``Loop.set_timing`` for its cost).
    """
    if meter is None:
        meter = get_meter("ferroloop", __version__)
    if timing:
        loop.set_timing(True)
    return Instrumentation(loop, meter, name or f"{id(loop):#x}", tracer, spans)
