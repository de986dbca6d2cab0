"""TLS over ferroloop's transports: asyncio's ``sslproto.SSLProtocol`` with a native data path.

``SSLProtocol`` derives from the native ``SSLProtocolCore`` (src/sslproto.rs) and from the running
interpreter's ``asyncio.sslproto.SSLProtocol``. The native base comes first, so its methods (the
per-record read and write path and its flow control) replace asyncio's; the handshake, shutdown,
timeouts and error reporting are asyncio's own code, which reads and writes the shared state
through the base's properties. The app-facing transport is asyncio's ``_SSLProtocolTransport``.
"""

from asyncio import sslproto

from ._ferroloop import SSLProtocolCore

__all__ = ["SSLProtocol"]


class SSLProtocol(SSLProtocolCore, sslproto.SSLProtocol):
    """asyncio's TLS protocol, whose bytes move through native code."""
