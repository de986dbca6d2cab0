"""ferroloop.opentelemetry against opentelemetry-sdk's in-memory reader and span exporter."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("opentelemetry.sdk")

import ferroloop.opentelemetry as ferro_otel  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

pytestmark = pytest.mark.timeout(60)


def collect(reader):
    """{metric name: [(attributes, value), ...]} of one collection."""
    out = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = (
                    metric.unit,
                    [(dict(p.attributes), p.value) for p in metric.data.data_points],
                )
    return out


def test_instruments_report_the_loops_counters(ferro):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    inst = ferro_otel.instrument(ferro, provider.get_meter("test"), name="main", spans=False)
    assert ferro.get_timing()

    n = 50

    async def main():
        for _ in range(n):
            ferro.call_soon(lambda: None)
        ferro.call_later(0.001, lambda: None)
        await asyncio.sleep(0.01)

    before = ferro.metrics()
    ferro.run_until_complete(main())
    after = ferro.metrics()
    got = collect(reader)
    attrs = {"ferroloop.loop.name": "main"}
    assert got["ferroloop.loop.callbacks"] == ("{callback}", [(attrs, after.callbacks)])
    assert after.callbacks - before.callbacks >= n
    assert got["ferroloop.loop.iterations"][1] == [(attrs, after.iterations)]
    assert got["ferroloop.loop.timers.fired"][1] == [(attrs, after.timers_fired)]
    assert got["ferroloop.loop.timers.pending"][1] == [(attrs, 0)]
    unit, points = got["ferroloop.loop.io"]
    assert unit == "By"
    assert {p[0]["network.io.direction"] for p in points} == {"receive", "transmit"}
    unit, points = got["ferroloop.loop.time"]
    assert unit == "s"
    states = {p[0]["ferroloop.loop.state"]: p[1] for p in points}
    assert states["idle"] >= 0.009 and states["busy"] >= 0
    assert 0.0 <= got["ferroloop.loop.utilization"][1][0][1] <= 1.0
    unit, points = got["ferroloop.loop.callback.duration"]
    assert unit == "s"
    quantiles = {p[0]["ferroloop.quantile"]: p[1] for p in points}
    assert set(quantiles) == {"0.5", "0.9", "0.99", "1"}
    assert quantiles["0.5"] <= quantiles["0.9"] <= quantiles["0.99"] <= quantiles["1"]
    assert "ferroloop.loop.lag" in got
    assert got["ferroloop.loop.callbacks.slow"][1] == [(attrs, 0)]
    for name in ("ferroloop.loop.fds", "ferroloop.loop.transports", "ferroloop.loop.servers"):
        assert name in got
    inst.close()
    assert "ferroloop.loop.callbacks" not in collect(reader)


def test_slow_callbacks_become_span_events(ferro):
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tracer_provider.get_tracer("test")
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    seen = []
    ferro.set_slow_callback_handler(lambda lp, r: seen.append(r))
    inst = ferro_otel.instrument(ferro, meter, tracer=tracer)
    ferro.slow_callback_duration = 0.04

    async def request():
        with tracer.start_as_current_span("request"):
            await asyncio.sleep(0)
            time.sleep(0.05)
            await asyncio.sleep(0)

    def outside():
        time.sleep(0.05)

    async def main():
        await ferro.create_task(request(), name="req-1")
        ferro.call_soon(outside)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    ferro.run_until_complete(main())
    spans = {s.name: s for s in exporter.get_finished_spans()}
    # In the task's span: an event naming the task.
    events = [e for e in spans["request"].events if e.name == "ferroloop.slow_callback"]
    assert len(events) == 1
    attributes = events[0].attributes
    assert attributes["ferroloop.task.name"] == "req-1"
    assert attributes["ferroloop.task.coro"].endswith("request")
    assert attributes["ferroloop.callback.duration"] >= 0.05
    assert "request" in attributes["code.stacktrace"]
    # Outside any span: a span of its own, as long as the callback.
    own = spans["ferroloop.slow_callback"]
    assert own.attributes["ferroloop.callback.kind"] == "callback"
    assert (own.end_time - own.start_time) >= 50_000_000
    # The handler set before still gets every report.
    assert len(seen) == 2
    assert collect(reader)["ferroloop.loop.callbacks.slow"][1][0][1] == 2
    inst.close()
    assert ferro.get_slow_callback_handler() is not None
