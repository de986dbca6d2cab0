"""Servers for the network benchmarks (bench/net.py), one per process.

    python bench/net_servers.py SERVER LOOP [--addr tcp:127.0.0.1:0 | --addr unix:PATH]

starts SERVER on a fresh LOOP (asyncio, uvloop, rloop or ferroloop), prints one JSON line on
stdout once it accepts connections (``{"ready": true, "addr": "tcp:127.0.0.1:PORT", ...}``, the
address the load generator should use), then serves until it is killed (SIGTERM: the
default action, so no shutdown code runs that could hang or be timed). If the loop does not
implement what the server needs (NotImplementedError while starting it, e.g. rloop's
create_unix_server), it prints ``{"unsupported": "no Unix sockets", "detail": ...}`` instead
and exits with code 4 (benchmarks.EXIT_UNSUPPORTED).

Servers (each the idiomatic way to write it with that API, the same code on every loop):

- ``sock``: ``loop.sock_accept`` + a task per connection doing ``sock_recv`` / ``sock_sendall``
  on a plain non-blocking socket: the sock_* coroutines and their reader/writer callbacks.
- ``streams``: ``asyncio.start_server``; per connection ``reader.read`` / ``writer.write`` /
  ``await writer.drain()``: StreamReader/StreamWriter over the loop's transport, one task each.
- ``protocol``: ``loop.create_server`` with an ``asyncio.Protocol`` whose ``data_received``
  calls ``transport.write(data)``: the bare transport path, no tasks or futures per message.
- ``http``: ``loop.create_server`` with an ``asyncio.Protocol`` feeding httptools'
  ``HttpRequestParser``; every request gets ``200 OK`` / ``Hello, World!`` with a
  Content-Length, keep-alive unless the client asked otherwise.

Anything the loop reports through its exception handler (an exception in a callback or a
task) is printed on stderr, which bench/net.py shows as a failure of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

# bench/ is sys.path[0] when run as `python bench/net_servers.py`.
from benchmarks import EXIT_UNSUPPORTED, LOOPS, loop_version, new_loop, unsupported

# sock_recv's buffer size. Big enough for a 10 KiB message in one call and a 100 KiB message
# in a couple; not much bigger, since CPython allocates the full size on every recv() call.
RECV_SIZE = 64 * 1024
# StreamReader.read(n) only slices what is already buffered, so n can be large.
STREAM_READ_SIZE = 1024 * 1024

Addr = tuple[str, str, int]  # ("tcp", host, port) or ("unix", path, 0)


def parse_addr(spec: str) -> Addr:
    if spec.startswith("unix:"):
        return ("unix", spec[len("unix:") :], 0)
    hostport = spec.removeprefix("tcp:")
    host, _, port = hostport.rpartition(":")
    return ("tcp", host or "127.0.0.1", int(port))


def format_addr(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"tcp:{host}:{port}"


def unlink_stale(addr: Addr) -> None:
    if addr[0] == "unix":
        Path(addr[1]).unlink(missing_ok=True)


# --------------------------------------------------------------------------
# sock_*: sock_accept / sock_recv / sock_sendall
# --------------------------------------------------------------------------


async def serve_sock(loop: asyncio.AbstractEventLoop, addr: Addr) -> socket.socket:
    unlink_stale(addr)
    if addr[0] == "unix":
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(addr[1])
    else:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((addr[1], addr[2]))
    lsock.listen(128)
    lsock.setblocking(False)

    async def echo(conn: socket.socket) -> None:
        recv, sendall = loop.sock_recv, loop.sock_sendall
        with conn:
            try:
                while data := await recv(conn, RECV_SIZE):
                    await sendall(conn, data)
            except ConnectionError:
                pass  # the load generator closes its connections without a goodbye

    async def accept_forever() -> None:
        while True:
            conn, _ = await loop.sock_accept(lsock)
            conn.setblocking(False)
            if conn.family != socket.AF_UNIX:
                # Transports do this themselves; a raw socket has to, or every echo of a
                # small message waits for the client's delayed ACK (Nagle).
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            loop.create_task(echo(conn))

    loop.create_task(accept_forever())
    return lsock


# --------------------------------------------------------------------------
# streams: start_server / reader.read / writer.write / drain
# --------------------------------------------------------------------------


async def _stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    read, write, drain = reader.read, writer.write, writer.drain
    try:
        while data := await read(STREAM_READ_SIZE):
            write(data)
            await drain()
    except ConnectionError:
        pass  # the load generator closes its connections without a goodbye
    finally:
        writer.close()


async def serve_streams(loop: asyncio.AbstractEventLoop, addr: Addr) -> socket.socket:
    unlink_stale(addr)
    if addr[0] == "unix":
        server = await asyncio.start_unix_server(_stream_echo, addr[1])
    else:
        server = await asyncio.start_server(_stream_echo, addr[1], addr[2], reuse_address=True)
    return server.sockets[0]


# --------------------------------------------------------------------------
# protocol: data_received -> transport.write
# --------------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def _create_server(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol], addr: Addr
) -> socket.socket:
    unlink_stale(addr)
    if addr[0] == "unix":
        server = await loop.create_unix_server(factory, addr[1])
    else:
        server = await loop.create_server(factory, addr[1], addr[2], reuse_address=True)
    return server.sockets[0]


async def serve_protocol(loop: asyncio.AbstractEventLoop, addr: Addr) -> socket.socket:
    return await _create_server(loop, EchoProtocol, addr)


# --------------------------------------------------------------------------
# http: asyncio.Protocol + httptools, "Hello, World!" with keep-alive
# --------------------------------------------------------------------------

HTTP_BODY = b"Hello, World!"
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(HTTP_BODY)).encode() + b"\r\n"
    b"\r\n" + HTTP_BODY
)
HTTP_RESPONSE_CLOSE = HTTP_RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
HTTP_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 server: the parser calls on_message_complete once per request (also
    for several pipelined requests in one data_received), which answers right away."""

    def __init__(self) -> None:
        import httptools

        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.parse_error = httptools.HttpParserError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.parse_error:
            if self.transport is not None:
                self.transport.write(HTTP_BAD_REQUEST)
                self.transport.close()

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.parser.should_keep_alive():
            transport.write(HTTP_RESPONSE)
        else:
            transport.write(HTTP_RESPONSE_CLOSE)
            transport.close()


async def serve_http(loop: asyncio.AbstractEventLoop, addr: Addr) -> socket.socket:
    import httptools  # noqa: F401 - fail here, before "ready", if it is missing

    return await _create_server(loop, HttpProtocol, addr)


SERVERS: dict[str, Callable[[asyncio.AbstractEventLoop, Addr], Awaitable[socket.socket]]] = {
    "sock": serve_sock,
    "streams": serve_streams,
    "protocol": serve_protocol,
    "http": serve_http,
}


def settle_malloc() -> None:
    """Put glibc malloc in the state a long-running process reaches anyway.

    glibc serves allocations above its mmap threshold (128 KiB at start) with a fresh mmap
    and frees them with munmap; the first time such a block is freed whole, it raises the
    threshold past that size for good. asyncio's transports call ``sock.recv(256 KiB)``, and
    CPython allocates the full 256 KiB before shrinking it to what arrived, so until that
    first raise every single read costs mmap + mremap + munmap. When (and whether) the raise
    happens depends on the process's history: measured on the same server, the first batch
    of connections ran at ~40k req/s and every later one at ~170k. Freeing one 1 MiB block
    here raises the threshold up front, identically for every loop and server, so runs
    measure the loop, not where glibc's heuristic happens to be.
    """
    block = bytes(1 << 20)
    del block


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("server", choices=SERVERS)
    p.add_argument("loop", choices=LOOPS)
    p.add_argument("--addr", default="tcp:127.0.0.1:0", help="tcp:HOST:PORT or unix:PATH")
    args = p.parse_args(argv)

    settle_malloc()
    loop = new_loop(args.loop)
    asyncio.set_event_loop(loop)

    def report(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        # Connection resets from the load generator's final close are normal; anything else
        # reaching the handler is a bug in the server code or the loop.
        exc = context.get("exception")
        if isinstance(exc, ConnectionError):
            return
        print(f"exception handler: {context.get('message')}: {exc!r}", file=sys.stderr)
        sys.stderr.flush()

    loop.set_exception_handler(report)
    addr = parse_addr(args.addr)
    try:
        lsock = loop.run_until_complete(SERVERS[args.server](loop, addr))
    except NotImplementedError as e:
        u = unsupported(e, "Unix sockets" if addr[0] == "unix" else None)
        print(json.dumps({"unsupported": u.short, "detail": u.detail}), flush=True)
        return EXIT_UNSUPPORTED
    ready = {
        "ready": True,
        "addr": format_addr(lsock),
        "server": args.server,
        "loop": args.loop,
        "version": loop_version(args.loop),
        "pid": os.getpid(),
    }
    print(json.dumps(ready), flush=True)
    loop.run_forever()  # until killed
    return 0


if __name__ == "__main__":
    sys.exit(main())
