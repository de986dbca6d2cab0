"""Networking for ``ferroloop.Loop``: sockets, DNS, TCP and Unix connections and servers.

``NetworkMixin`` is a base class of ``Loop``. The split is by temperature:

- The data path is native: every connected stream socket gets a ``SocketTransport`` whose reads,
  writes, buffering and flow control run in Rust (src/transport.rs), dispatched straight from
  the reactor.
- TLS is asyncio's ``sslproto.SSLProtocol`` whose per-record methods are native (``_sslproto``,
  src/sslproto.rs), on top of that transport.
- The cold orchestration (argument checks, resolving, happy eyeballs, binding, the accept loop,
  the ``sock_*`` coroutines, sendfile, the TLS handshake and shutdown) is the running interpreter's
  own asyncio code, taken method by method from ``base_events``, ``selector_events`` and
  ``unix_events``. It runs once per connection, not per byte, and taking it as is keeps every
  argument check, error message and corner case exactly asyncio's, for whichever Python
  version we run on. Those methods only need the small internal interface defined below
  (``_transports``, ``_add_reader``..., ``_make_socket_transport``, ``_start_serving``).

UDP, pipes and subprocesses are in ``_unix``.
"""

from __future__ import annotations

import inspect
import os
import socket
import types
import weakref
from asyncio import base_events, constants, log, selector_events, tasks, unix_events
from functools import partial

from ._ferroloop import LoopCore, _sock_recv_into_nowait, _sock_recv_nowait

try:
    from ssl import SSLSocket as _SSLSocket
except ImportError:  # Python built without ssl
    _SSLSocket = None
from ._sslproto import SSLProtocol
from ._transports import SocketTransport

__all__ = ["NetworkMixin", "Server"]

_AI_NUMERICHOST = int(socket.AI_NUMERICHOST)

_BASE = base_events.BaseEventLoop
_SELECTOR = selector_events.BaseSelectorEventLoop
_UNIX = unix_events._UnixSelectorEventLoop

# asyncio's methods that run unchanged on our loop, by the class that defines them.
_BORROWED = {
    _BASE: (
        "getnameinfo",
        "_getaddrinfo_debug",
        "_ensure_resolved",
        "_create_server_getaddrinfo",
        "create_connection",
        "_connect_sock",
        "_create_connection_transport",
        "connect_accepted_socket",
        "sock_sendfile",
        "_check_sendfile_params",
        "_sock_sendfile_fallback",
        "sendfile",
    ),
    _SELECTOR: (
        "_sock_recv",
        "_sock_recv_into",
        "_sock_sendall",
        "sock_connect",
        "_sock_connect",
        "_sock_connect_cb",
        "sock_accept",
        "_sock_accept",
        "_sendfile_native",
        "_start_serving",
        "_accept_connection",
        "_accept_connection2",
    ),
    _UNIX: (
        "create_unix_connection",
        "_sock_sendfile_native",
        "_sock_sendfile_native_impl",
        "_sock_sendfile_update_filepos",
        "_sock_add_cancellation_callback",
    ),
}


class Server(base_events.Server):
    """asyncio's Server, which also knows its connected transports.

    That is what ``close_clients()`` and ``abort_clients()`` (new in Python 3.13) need; they are
    available on every Python version here. The transports attach and detach themselves.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Weak, as 3.13's own: a server the program still holds must not keep alive the
        # connections it accepted once nothing else does (they are closed, with a
        # ResourceWarning, when collected, as on the stock loop).
        self._clients = weakref.WeakSet()
        servers = getattr(self._loop, "_metrics_servers", None)
        if servers is not None:
            servers.add(self)
        if not hasattr(self, "_active_count"):
            self._active_count = 0

    # Both counts are kept so that the base class's close() and wait_closed() work whichever
    # of them the running Python's version uses.
    def _attach(self, transport=None):
        assert self._sockets is not None
        self._active_count += 1
        if transport is not None:
            self._clients.add(transport)

    def _detach(self, transport=None):
        assert self._active_count > 0
        self._active_count -= 1
        self._clients.discard(transport)
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def close_clients(self):
        """Close every connection this server accepted (their buffered data is flushed)."""
        for transport in self._clients.copy():
            transport.close()

    def abort_clients(self):
        """Abort every connection this server accepted (their buffered data is dropped)."""
        for transport in self._clients.copy():
            transport.abort()


class _SendfileFallbackProtocol(base_events._SendfileFallbackProtocol):
    """asyncio's, without its ``isinstance(transp, transports._FlowControlMixin)`` check.

    Our transport is native, so it cannot derive from asyncio's pure-Python transport classes
    (uvloop's cannot either); it has everything this protocol uses.
    """

    def __init__(self, transp):
        self._transport = transp
        self._proto = transp.get_protocol()
        self._should_resume_reading = transp.is_reading()
        self._should_resume_writing = transp._protocol_paused
        transp.pause_reading()
        transp.set_protocol(self)
        if self._should_resume_writing:
            self._write_ready_fut = transp._loop.create_future()
        else:
            self._write_ready_fut = None


def _rebind_server(loop, server):
    """Make asyncio's not yet serving ``base_events.Server`` one of ours."""
    return Server(
        loop,
        server._sockets,
        server._protocol_factory,
        server._ssl_context,
        server._backlog,
        server._ssl_handshake_timeout,
        server._ssl_shutdown_timeout,
    )


class NetworkMixin:
    """The networking half of asyncio.AbstractEventLoop."""

    # -- the internal interface asyncio's networking methods use ------------------------------

    # `context` (3.15): the contextvars context the transport's protocol callbacks run in.
    def _make_socket_transport(
        self, sock, protocol, waiter=None, *, extra=None, server=None, context=None
    ):
        return SocketTransport(self, sock, protocol, waiter, extra, server, context)

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
        context=None,
    ):
        # asyncio's, except that the TLS protocol (ours, asyncio's with a native data path) sits
        # on our native transport; asyncio's names its own selector transport class.
        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = SSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        self._make_socket_transport(
            rawsock, ssl_protocol, extra=extra, server=server, context=context
        )
        return ssl_protocol._app_transport

    # The internal interface: LoopCore's methods without the transport check of Loop's public
    # ones, which the callers have made (_add_reader and _add_writer, which take 3.15's
    # `context=`, are LoopCore's own).
    _remove_reader = LoopCore.remove_reader
    _remove_writer = LoopCore.remove_writer

    # -- the sock_* methods on the per-request path ---------------------------------------------
    # asyncio's code with the per-call overhead taken out (each runs once per read or write of
    # a sock_* server): same checks, same errors, same cancellation behaviour. The first recv
    # says "nothing yet" with None rather than a BlockingIOError (src/sock.rs).

    def _ensure_fd_no_transport(self, fd):
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                # This code matches selectors._fileobj_to_fd function.
                raise ValueError(f"Invalid file object: {fd!r}") from None
        # The WeakValueDictionary's own dict: its __getitem__ raises KeyError in Python code.
        ref = self._transports.data.get(fileno)
        transport = ref() if ref is not None else None
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    async def sock_recv(self, sock, n):
        if _SSLSocket is not None and isinstance(sock, _SSLSocket):
            raise TypeError("Socket cannot be of type SSLSocket")
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        data = _sock_recv_nowait(sock, n)
        if data is not None:
            return data
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = LoopCore.add_reader(self, fd, self._sock_recv, fut, sock, n)
        fut.add_done_callback(partial(self._sock_reader_done, fd, handle))
        return await fut

    async def sock_recv_into(self, sock, buf):
        if _SSLSocket is not None and isinstance(sock, _SSLSocket):
            raise TypeError("Socket cannot be of type SSLSocket")
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        count = _sock_recv_into_nowait(sock, buf)
        if count is not None:
            return count
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = LoopCore.add_reader(self, fd, self._sock_recv_into, fut, sock, buf)
        fut.add_done_callback(partial(self._sock_reader_done, fd, handle))
        return await fut

    async def sock_sendall(self, sock, data):
        if _SSLSocket is not None and isinstance(sock, _SSLSocket):
            raise TypeError("Socket cannot be of type SSLSocket")
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        if n == len(data):
            return
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        # The position lives in a list: the callback moves it on.
        handle = LoopCore.add_writer(self, fd, self._sock_sendall, fut, sock, memoryview(data), [n])
        fut.add_done_callback(partial(self._sock_writer_done, fd, handle))
        return await fut

    # asyncio's names and signatures (its sock_connect and sock_accept use them too).
    def _sock_read_done(self, fd, fut, handle=None):
        if handle is None or not handle.cancelled():
            LoopCore.remove_reader(self, fd)

    def _sock_write_done(self, fd, fut, handle=None):
        if handle is None or not handle.cancelled():
            LoopCore.remove_writer(self, fd)

    def _sock_reader_done(self, fd, handle, fut):
        if not handle.cancelled():
            LoopCore.remove_reader(self, fd)

    def _sock_writer_done(self, fd, handle, fut):
        if not handle.cancelled():
            LoopCore.remove_writer(self, fd)

    # -- DNS --------------------------------------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """``socket.getaddrinfo`` off the loop's thread, except for numeric hosts.

        A numeric host (or None) needs no resolver, so it is answered here at once; only names
        go to the default executor, as asyncio does. The answer at once is asyncio's in every
        other way: a closed loop, or one whose executor was shut down, raises as
        run_in_executor() would; flags that are not an int go the executor's way, so that
        socket.getaddrinfo() says what is wrong with them.
        """
        self._check_closed()
        self._check_default_executor()
        if isinstance(flags, int):
            try:
                # A plain int: the AddressInfo flag would fold a flags value out of C's range
                # into a valid one, where socket.getaddrinfo() raises OverflowError.
                return socket.getaddrinfo(host, port, family, type, proto, flags | _AI_NUMERICHOST)
            except socket.gaierror as exc:
                if exc.errno != socket.EAI_NONAME:
                    raise
            except UnicodeError:
                pass  # Let the resolver raise what it raises for such a name.
        getaddr_func = self._getaddrinfo_debug if self._debug else socket.getaddrinfo
        return await self.run_in_executor(
            None, getaddr_func, host, port, family, type, proto, flags
        )

    # -- servers ------------------------------------------------------------------------------
    # create_server and create_unix_server are made below (_with_signature_of) with the running
    # version's signature, so that wrong arguments raise TypeError at the call, as asyncio's
    # coroutine functions do, not when the coroutine is awaited.

    async def _create_server(self, protocol_factory, host, port, start_serving, kwargs):
        # asyncio checks the arguments, resolves and binds; the Server is ours.
        server = await _BASE.create_server(
            self, protocol_factory, host, port, start_serving=False, **kwargs
        )
        return await self._finish_server(server, start_serving)

    async def _create_unix_server(self, protocol_factory, path, start_serving, kwargs):
        server = await _UNIX.create_unix_server(
            self, protocol_factory, path, start_serving=False, **kwargs
        )
        return await self._finish_server(server, start_serving)

    def _stop_serving(self, sock):
        # Python 3.13's Unix loop (its create_unix_server(cleanup_socket=True) fills
        # _unix_server_sockets): a listening socket's file goes with its server, unless
        # another socket has taken the path since.
        path = sock.getsockname() if sock in self._unix_server_sockets else None
        _SELECTOR._stop_serving(self, sock)
        if path is not None:
            prev_ino = self._unix_server_sockets.pop(sock)
            try:
                if os.stat(path).st_ino == prev_ino:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                log.logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)

    async def _finish_server(self, server, start_serving):
        server = _rebind_server(self, server)
        if start_serving:
            server._start_serving()
            # Skip one loop iteration so that all 'loop.add_reader' go through.
            await tasks.sleep(0)
        return server


def borrow(target, table):
    """Give ``target`` asyncio's methods: ``table`` maps each defining class to method names."""
    for cls, names in table.items():
        for name in names:
            setattr(target, name, cls.__dict__[name])


def retarget(func, **names):
    """asyncio's function ``func``, the running version's code, with the module-level names it
    looks up replaced by ``names`` (the rest of its module's globals as they are now)."""
    namespace = dict(func.__globals__)
    namespace.update(names)
    new = types.FunctionType(
        func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__
    )
    new.__kwdefaults__ = func.__kwdefaults__
    new.__qualname__ = func.__qualname__
    new.__doc__ = func.__doc__
    return new


def _with_signature_of(base, impl_name, fixed):
    """An ``async def`` with the signature of asyncio's ``base`` (the running version's names,
    defaults and keyword-only markers) that awaits ``self.<impl_name>(*fixed, start_serving,
    kwargs)`` with the rest of the arguments in ``kwargs``."""
    sig = inspect.signature(base)
    params, defaults = [], {}
    keyword_only = False
    for i, p in enumerate(sig.parameters.values()):
        if p.kind is p.KEYWORD_ONLY and not keyword_only:
            params.append("*")
            keyword_only = True
        text = p.name
        if p.default is not p.empty:
            defaults[f"_d{i}"] = p.default
            text += f"=_d{i}"
        params.append(text)
    rest = [p for p in sig.parameters if p not in ("self", "start_serving", *fixed)]
    source = (
        "class NetworkMixin:\n"
        f"    async def {base.__name__}({', '.join(params)}):\n"
        f"        kwargs = {{{', '.join(f'{n!r}: {n}' for n in rest)}}}\n"
        f"        return await self.{impl_name}({', '.join(fixed)}, start_serving, kwargs)\n"
    )
    namespace = dict(defaults)
    exec(source, namespace)  # the source is built above from asyncio's own signature
    func = namespace["NetworkMixin"].__dict__[base.__name__]
    func.__module__ = __name__
    func.__doc__ = base.__doc__
    return func


borrow(NetworkMixin, _BORROWED)
NetworkMixin.create_server = _with_signature_of(
    _BASE.create_server, "_create_server", ("protocol_factory", "host", "port")
)
NetworkMixin.create_unix_server = _with_signature_of(
    _UNIX.create_unix_server, "_create_unix_server", ("protocol_factory", "path")
)
# asyncio's, creating our TLS protocol (start_tls's `sslproto.SSLProtocol`) and our sendfile
# fallback protocol: asyncio's checks `isinstance(transp, transports._FlowControlMixin)`.
NetworkMixin.start_tls = retarget(
    _BASE.start_tls, sslproto=types.SimpleNamespace(SSLProtocol=SSLProtocol)
)
NetworkMixin._sendfile_fallback = retarget(
    _BASE._sendfile_fallback, _SendfileFallbackProtocol=_SendfileFallbackProtocol
)
