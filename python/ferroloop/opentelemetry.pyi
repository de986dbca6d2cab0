"""OpenTelemetry instruments for a ferroloop loop (see opentelemetry.py)."""

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from ._loop import Loop
from ._metrics import SlowCallback

__all__ = ["Instrumentation", "instrument"]

class Instrumentation:
    loop: Loop
    name: str
    tracer: Tracer | None
    def __init__(
        self, loop: Loop, meter: Meter, name: str, tracer: Tracer | None, spans: bool
    ) -> None: ...
    def record_slow_callback(self, report: SlowCallback) -> None: ...
    def close(self) -> None: ...

def instrument(
    loop: Loop,
    meter: Meter | None = None,
    *,
    name: str | None = None,
    tracer: Tracer | None = None,
    spans: bool = True,
    timing: bool = True,
) -> Instrumentation: ...
