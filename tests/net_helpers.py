"""Shared helpers for the networking suite (tests/test_net_*.py).

Everything here is loop-agnostic: the tests pass in the loop under test (the ``loop`` fixture
from conftest.py, ids "asyncio" and "ferroloop") so a behaviour difference shows up as a
failing twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import random
import resource
import socket
import uuid

import pytest

KiB = 1024
MiB = 1024 * KiB

# Payload sizes for the echo round trips.
ECHO_SIZES = [1, KiB, 64 * KiB, MiB, 16 * MiB]
ECHO_IDS = ["1B", "1KiB", "64KiB", "1MiB", "16MiB"]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (reordering or loss changes the hash)."""
    return random.Random(seed * 1_000_003 + size).randbytes(size)


def digest(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def run(loop, coro, timeout: float = 20):
    """Run ``coro`` on ``loop`` with an upper bound, so a hang fails instead of stalling."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def closed_port() -> int:
    """A 127.0.0.1 TCP port with nothing listening (bound briefly, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle_fds() -> None:
    """Drop garbage that may hold sockets before an fd count."""
    for _ in range(3):
        gc.collect()


def abstract_name() -> str:
    """A unique name in Linux's abstract Unix socket namespace."""
    return f"\0ferroloop-test-{os.getpid()}-{uuid.uuid4().hex}"


def on_reference_loop(scenario, *args):
    """Run ``scenario(loop, *args)`` on a fresh stock asyncio loop (the reference behaviour)."""
    ref = asyncio.SelectorEventLoop()
    try:
        return ref.run_until_complete(asyncio.wait_for(scenario(ref, *args), 20))
    finally:
        ref.close()


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def require_ipv6():
    if not ipv6_loopback_available():
        pytest.skip("IPv6 loopback ::1 cannot be bound on this host")


@contextlib.contextmanager
def raised_nofile():
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; restore it afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield target
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Recorder(asyncio.Protocol):
    """A Protocol that records every callback and collects the bytes it receives.

    ``events`` is the callback order (names); ``lost`` the arguments of connection_lost;
    ``eof_result`` is what eof_received returns; futures ``made``, ``eof`` and ``done`` resolve
    on connection_made, eof_received and connection_lost.
    """

    eof_result = None

    def __init__(self, loop=None):
        self.loop = loop or asyncio.get_event_loop()
        self.transport = None
        self.data = bytearray()
        self.events: list[str] = []
        self.lost: list[BaseException | None] = []
        self.made = self.loop.create_future()
        self.eof = self.loop.create_future()
        self.done = self.loop.create_future()
        self.waiters: list[tuple[int, asyncio.Future]] = []

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        if not self.made.done():
            self.made.set_result(transport)

    def data_received(self, data):
        self.events.append("data")
        assert isinstance(data, bytes), type(data)
        self.data += data
        self._wake()

    def eof_received(self):
        self.events.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.append(exc)
        if not self.done.done():
            self.done.set_result(exc)
        self._wake()

    def _wake(self):
        for n, fut in list(self.waiters):
            if (len(self.data) >= n or self.lost) and not fut.done():
                fut.set_result(None)

    async def wait_bytes(self, n: int):
        if len(self.data) >= n:
            return
        fut = self.loop.create_future()
        self.waiters.append((n, fut))
        await fut


class EchoProtocol(asyncio.Protocol):
    """Echoes everything; closes (after flushing) when the peer half-closes."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return None  # the transport closes itself once the echoes are flushed


class BufferedEcho(asyncio.BufferedProtocol):
    """Echo server built on BufferedProtocol (get_buffer / buffer_updated)."""

    def __init__(self, bufsize: int = 64 * KiB):
        self.buf = bytearray(bufsize)
        self.sizehints: list[int] = []

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.sizehints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.buf[:nbytes]))

    def eof_received(self):
        return None


class DatagramEcho(asyncio.DatagramProtocol):
    """Sends every datagram back where it came from; remembers who sent."""

    def connection_made(self, transport):
        self.transport = transport
        self.peers = set()

    def datagram_received(self, data, addr):
        self.peers.add(addr)
        self.transport.sendto(data, addr)


def first_accepted(loop, make):
    """Wrap the protocol factory ``make``: (factory, future of the first protocol it makes)."""
    accepted = loop.create_future()

    def factory():
        p = make()
        if not accepted.done():
            accepted.set_result(p)
        return p

    return factory, accepted


async def echo_server(loop, factory=EchoProtocol, host="127.0.0.1", **kw):
    server = await loop.create_server(factory, host, 0, **kw)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def close_server(server):
    server.close()
    await server.wait_closed()
