import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._ferroloop import Handle as Handle
from ._ferroloop import TimerHandle as TimerHandle
from ._loop import Loop as Loop
from ._metrics import Histogram as Histogram
from ._metrics import LoopMetrics as LoopMetrics
from ._metrics import SlowCallback as SlowCallback

# As at run time: EventLoopPolicy is left out of `import *` where asyncio deprecates policies.
__all__ = [
    "Handle",
    "Histogram",
    "Loop",
    "LoopMetrics",
    "SlowCallback",
    "TimerHandle",
    "install",
    "new_event_loop",
    "run",
]
if sys.version_info < (3, 14):
    __all__ += ["EventLoopPolicy"]

_T = TypeVar("_T")

__version__: str

class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def _loop_factory(self) -> Loop: ...

def new_event_loop() -> Loop: ...
def install() -> None: ...
def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T: ...
