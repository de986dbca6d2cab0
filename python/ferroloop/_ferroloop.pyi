"""Type stubs for the native module ferroloop._ferroloop.

The scheduling methods are typed to return asyncio's ``Handle`` and ``TimerHandle`` (as uvloop's
stubs do), so that their results go where asyncio's types are expected. At run time they return
ferroloop's own ``Handle``/``TimerHandle``, which have the whole public interface of asyncio's
(``cancel``, ``cancelled``, ``get_context``, and ``when`` for timers) but are not subclasses of
them: ``isinstance(handle, asyncio.Handle)`` is false, as with uvloop.
"""

import asyncio
import contextvars
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any, Protocol, Self, TypeAlias, TypeVar, TypeVarTuple, final

from typing_extensions import disjoint_base

__all__ = [
    "LoopCore",
    "Handle",
    "TimerHandle",
    "SocketTransportCore",
    "DatagramReader",
    "SSLProtocolCore",
    "_ssl_app_write_descriptor",
    "_sock_recv_nowait",
    "_sock_recv_into_nowait",
    "_histogram_bounds",
    "_call_soon_fastcall",
    "_call_soon_threadsafe_fastcall",
]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)
_Ts = TypeVarTuple("_Ts")

# What asyncio accepts as a coroutine or an awaitable (typeshed's private asyncio aliases):
# 3.12 no longer takes generator-based coroutines.
if sys.version_info >= (3, 12):
    _AwaitableLike: TypeAlias = Awaitable[_T_co]
    _CoroutineLike: TypeAlias = Coroutine[Any, Any, _T_co]
else:
    _AwaitableLike: TypeAlias = Generator[Any, None, _T_co] | Awaitable[_T_co]
    _CoroutineLike: TypeAlias = Generator[Any, None, _T_co] | Coroutine[Any, Any, _T_co]

class _TaskFactory(Protocol):
    # The shape of asyncio's task factories (typeshed's private asyncio.events._TaskFactory).
    def __call__(
        self, loop: asyncio.AbstractEventLoop, factory: _CoroutineLike[_T], /
    ) -> asyncio.Future[_T]: ...

@disjoint_base
class Handle:
    def cancel(self) -> None: ...
    def cancelled(self) -> bool: ...
    def get_context(self) -> contextvars.Context: ...

@final
class TimerHandle(Handle):
    def when(self) -> float: ...

@disjoint_base
class LoopCore:
    slow_callback_duration: float
    def _metrics_raw(self) -> dict[str, Any]: ...
    def _set_timing(self, enabled: bool) -> None: ...
    def get_timing(self) -> bool: ...
    def __new__(cls, *_args: Any, **_kwargs: Any) -> Self: ...
    def time(self) -> float: ...
    def call_soon(
        self,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle: ...
    def call_later(
        self,
        delay: float,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle: ...
    def call_at(
        self,
        when: float,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle: ...
    def call_soon_threadsafe(
        self,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle: ...
    def create_future(self) -> asyncio.Future[Any]: ...
    # asyncio's signatures of each version (3.13.3 adds eager_start, 3.14 passes any other
    # keyword to the task factory); at run time `(coro, **kwargs)` checked per version.
    if sys.version_info >= (3, 13):
        def create_task(
            self,
            coro: _CoroutineLike[_T],
            *,
            name: str | None = None,
            context: contextvars.Context | None = None,
            eager_start: bool | None = None,
        ) -> asyncio.Task[_T]: ...
    else:
        def create_task(
            self,
            coro: _CoroutineLike[_T],
            *,
            name: str | None = None,
            context: contextvars.Context | None = None,
        ) -> asyncio.Task[_T]: ...

    def set_task_factory(self, factory: _TaskFactory | None) -> None: ...
    def get_task_factory(self) -> _TaskFactory | None: ...
    # These return the watcher's Handle at run time; typed as asyncio's (None), which is all
    # that a program written for asyncio may rely on.
    def add_reader(self, fd: Any, callback: Callable[[*_Ts], object], *args: *_Ts) -> None: ...
    def add_writer(self, fd: Any, callback: Callable[[*_Ts], object], *args: *_Ts) -> None: ...
    def remove_reader(self, fd: Any) -> bool: ...
    def remove_writer(self, fd: Any) -> bool: ...
    def stop(self) -> None: ...
    def is_running(self) -> bool: ...
    def is_closed(self) -> bool: ...
    def get_debug(self) -> bool: ...

@disjoint_base
class SocketTransportCore:
    """The native data path of a stream socket transport (asyncio.Transport's interface)."""

    def __new__(
        cls,
        loop_: LoopCore,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[None] | None = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
        context: contextvars.Context | None = None,
    ) -> Self: ...
    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def is_reading(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, high: int | None = ..., low: int | None = ...) -> None: ...
    def get_write_buffer_limits(self) -> tuple[int, int]: ...
    def get_write_buffer_size(self) -> int: ...
    def get_extra_info(self, name: str, default: Any = ...) -> Any: ...
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...
    def get_protocol(self) -> asyncio.BaseProtocol: ...

@final
class DatagramReader:
    """The native receive path of IPv4/IPv6 datagram transports (see src/datagram.rs)."""

    def __new__(cls, sock: socket.socket, max_size: int) -> Self: ...
    def read(self, protocol: asyncio.DatagramProtocol) -> None: ...
    def send(
        self,
        protocol: asyncio.DatagramProtocol,
        data: bytes,
        addr: Any,
        connected: bool,
    ) -> bool: ...

@disjoint_base
class SSLProtocolCore:
    """The native data path of asyncio's TLS protocol (see src/sslproto.rs): the base that
    ferroloop._sslproto.SSLProtocol puts before asyncio.sslproto.SSLProtocol in its MRO."""

    def __new__(cls, *_args: Any, **_kwargs: Any) -> Self: ...
    def get_buffer(self, n: int) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    def _do_read(self) -> None: ...
    def _do_read__copied(self) -> None: ...
    def _do_read__buffered(self) -> None: ...
    def _write_appdata(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None: ...
    def _do_write(self) -> None: ...
    def _process_outgoing(self) -> None: ...
    def _control_app_writing(self) -> None: ...
    def _control_ssl_reading(self) -> None: ...
    def _get_write_buffer_size(self) -> int: ...
    def _get_read_buffer_size(self) -> int: ...
    _state: Any
    _sslobj: Any
    _incoming: Any
    _outgoing: Any
    _transport: Any
    _app_protocol: Any
    _app_protocol_is_buffer: bool
    _app_transport: Any
    _loop: Any
    _ssl_buffer: bytearray
    _ssl_buffer_view: memoryview
    _write_backlog: Any
    _write_buffer_size: int
    _conn_lost: int
    _app_reading_paused: bool
    _app_writing_paused: bool
    _ssl_reading_paused: bool
    _ssl_writing_paused: bool
    _incoming_high_water: int
    _incoming_low_water: int
    _outgoing_high_water: int
    _outgoing_low_water: int

def _ssl_app_write_descriptor(cls: type) -> Any:
    """A native ``write`` method for asyncio's ``_SSLProtocolTransport`` (or a subclass)."""

def _sock_recv_nowait(sock: socket.socket, n: int) -> bytes | None:
    """``sock.recv(n)``, or None when nothing has arrived yet (instead of BlockingIOError)."""

def _sock_recv_into_nowait(sock: socket.socket, buf: Any) -> int | None:
    """``sock.recv_into(buf)``, or None when nothing has arrived yet."""

# Loop's call_soon and call_soon_threadsafe (method descriptors of LoopCore, see src/fastcall.rs).
_call_soon_fastcall: Callable[..., asyncio.Handle]
_call_soon_threadsafe_fastcall: Callable[..., asyncio.Handle]

def _histogram_bounds() -> list[float]: ...
