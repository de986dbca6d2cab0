"""TLS over ferroloop's transports: asyncio's ``sslproto.SSLProtocol`` with a native data path.

``SSLProtocol`` derives from the native ``SSLProtocolCore`` (src/sslproto.rs) and from the running
interpreter's ``asyncio.sslproto.SSLProtocol``. The native base comes first, so its methods (the
per-record read and write path and its flow control) replace asyncio's; the handshake, shutdown,
timeouts and error reporting are asyncio's own code, which reads and writes the shared state
through the base's properties. The app-facing transport is asyncio's ``_SSLProtocolTransport``
with a native ``write``.
"""

from asyncio import sslproto

from ._ferroloop import SSLProtocolCore, _ssl_app_write_descriptor

__all__ = ["SSLProtocol"]


class _SSLProtocolTransport(sslproto._SSLProtocolTransport):
    """asyncio's transport for the app protocol, whose ``write`` hands the data straight to the
    native write path (asyncio's checks and behaviour, without a Python frame)."""

    write = _ssl_app_write_descriptor(sslproto._SSLProtocolTransport)


class SSLProtocol(SSLProtocolCore, sslproto.SSLProtocol):
    """asyncio's TLS protocol, whose bytes move through native code."""

    def _get_app_transport(self):
        # asyncio's (the same in 3.11-3.13), with our transport class.
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport = _SSLProtocolTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport
