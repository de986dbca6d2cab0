"""The Python face of ferroloop's native transports.

``SocketTransport`` is asyncio's ``_SelectorSocketTransport`` for TCP and Unix stream sockets:
the data path lives in the native base ``SocketTransportCore`` (src/transport.rs); this subclass
adds what runs once per connection and the class attributes asyncio's own code looks for.
"""

from __future__ import annotations

import warnings
from asyncio import base_events, constants, futures

from ._ferroloop import SocketTransportCore

__all__ = ["SocketTransport", "transport_repr"]


def transport_repr(transport, reading, bufsize, show_io=True):
    """asyncio's selector-transport repr, from the transport's state (there is no selector to
    ask): ``<Class fd=N read=polling write=<idle, bufsize=0>>``."""
    info = [type(transport).__name__]
    if transport._sock is None:
        info.append("closed")
    elif transport._closing:
        info.append("closing")
    info.append(f"fd={transport._sock_fd}")
    if transport._sock is not None and show_io:
        info.append("read=" + ("polling" if reading else "idle"))
        info.append(f"write=<{'polling' if bufsize else 'idle'}, bufsize={bufsize}>")
    return "<{}>".format(" ".join(info))


class SocketTransport(SocketTransportCore):
    """A stream transport over a connected, non-blocking socket."""

    # loop.sendfile() may use os.sendfile() on this transport's socket.
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    _start_tls_compatible = True

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None, context=None):
        # The native base has taken loop, sock, protocol, extra, server and context already.
        # A context (3.15 passes one) is where every protocol callback runs; without one each
        # scheduled callback gets a copy of the current context, as before 3.15.
        base_events._set_nodelay(sock)
        loop._transports[self._sock_fd] = self
        if server is not None:
            server._attach(self)
        loop.call_soon(protocol.connection_made, self, context=context)
        # Only start reading once connection_made() has been called.
        loop.call_soon(self._start_reading, context=context)
        if waiter is not None:
            # Only wake up the waiter once connection_made() has been called.
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None, context=context)

    def __repr__(self):
        return transport_repr(self, self.is_reading(), self.get_write_buffer_size())

    def __del__(self, _warn=warnings.warn):
        sock = self._sock
        if sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            sock.close()
