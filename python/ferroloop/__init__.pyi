import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._ferroloop import Handle as Handle
from ._ferroloop import LoopCore
from ._ferroloop import TimerHandle as TimerHandle

_T = TypeVar("_T")

__version__: str

class Loop(LoopCore, asyncio.AbstractEventLoop): ...  # type: ignore[misc]

class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def _loop_factory(self) -> Loop: ...

def new_event_loop() -> Loop: ...
def install() -> None: ...
def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = ...) -> _T: ...
