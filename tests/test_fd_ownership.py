"""A socket closed under its transport: its fd number goes to the next socket the program opens,
and that socket must never see the old connection's I/O (a write, a read, a registration).

The stock loop's transports do their I/O through the socket object, whose methods fail with EBADF
once it is closed; ferroloop's native transports check that the socket object still holds their
fd right before each syscall. Each test closes the program's socket object under a transport,
opens a socket that takes the same number, and checks that nothing reaches or leaves it.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
from net_helpers import run

pytestmark = pytest.mark.timeout(30)


class Recorder(asyncio.Protocol):
    def __init__(self, loop):
        self.data = bytearray()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def reuse(closed_fd):
    """A connected socketpair one end of which took `closed_fd`'s number: (that end, its peer).
    Lower free numbers are taken by pairs closed again afterwards."""
    spare = []
    try:
        for _ in range(64):
            c, d = socket.socketpair()
            if d.fileno() == closed_fd:
                c, d = d, c
            if c.fileno() == closed_fd:
                c.setblocking(False)
                d.setblocking(False)
                return c, d
            spare += [c, d]
        pytest.fail(f"fd {closed_fd} was not reused: the test needs it")
    finally:
        for s in spare:
            s.close()


def pending(sock):
    try:
        return sock.recv(1000)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_write_after_the_socket_was_closed_reaches_no_one(loop, family):
    async def main():
        if family == "unix":
            a, b = socket.socketpair()
        else:
            with socket.create_server(("127.0.0.1", 0)) as srv:
                b = socket.create_connection(srv.getsockname())
                a, _ = srv.accept()
        tr, pr = await loop.connect_accepted_socket(lambda: Recorder(loop), a)
        fd = a.fileno()
        a.close()
        c, d = reuse(fd)
        with c, d, b:
            tr.write(b"LEAKED-DATA")
            exc = await asyncio.wait_for(pr.lost, 5)
            await asyncio.sleep(0.05)
            return tr.is_closing(), exc, pending(d), pending(b)

    closing, exc, to_new_peer, to_old_peer = run(loop, main())
    assert closing
    assert isinstance(exc, OSError) and exc.errno == errno.EBADF
    assert to_new_peer == b""
    assert to_old_peer == b""


def test_buffered_writes_after_the_socket_was_closed_reach_no_one(loop):
    """Data waiting in the transport's buffer when the socket is closed: the kernel dropped the
    write watch with the socket, and nothing flushes the buffer into the socket that took the
    number, even once that one is writable (and as the stock loop, the transport then waits)."""

    async def main():
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        tr, pr = await loop.connect_accepted_socket(lambda: Recorder(loop), a)
        tr.write(b"x" * 1_000_000)  # most of it is buffered, waiting for the peer
        assert tr.get_write_buffer_size() > 0
        fd = a.fileno()
        a.close()
        c, d = reuse(fd)
        with b, c, d:
            tr.write(b"more")
            await asyncio.sleep(0.1)
            # Not closed here: the stock transport's abort() would unregister the number from
            # its selector, where it is not registered any more (FileNotFoundError).
            return pending(d)

    assert run(loop, main()) == b""


def test_resume_reading_after_the_socket_was_closed_reads_no_ones_data(loop):
    async def main():
        a, b = socket.socketpair()
        tr, pr = await loop.connect_accepted_socket(lambda: Recorder(loop), a)
        await asyncio.sleep(0)
        tr.pause_reading()
        fd = a.fileno()
        a.close()
        c, d = reuse(fd)
        with b, c, d:
            d.send(b"secret of the new connection")
            tr.resume_reading()
            await asyncio.sleep(0.05)
            return bytes(pr.data), pending(c), tr.is_closing()

    stolen, still_there, closing = run(loop, main())
    assert stolen == b""
    assert still_there == b"secret of the new connection"
    assert closing


def test_get_buffer_that_closes_the_socket_reads_no_ones_data(loop):
    """A BufferedProtocol whose get_buffer() closes the socket and opens one on the same number
    with data waiting: the read after get_buffer must not take that data."""
    kept = []

    class Evil(asyncio.BufferedProtocol):
        def __init__(self):
            self.updated = []
            self.lost = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport
            self.sock = transport.get_extra_info("socket")

        def get_buffer(self, sizehint):
            if not kept:
                fd = self.sock.fileno()
                raw = self.transport._sock
                raw.close()
                c, d = reuse(fd)
                d.send(b"secret")
                kept.extend([c, d])
            return bytearray(1024)

        def buffer_updated(self, nbytes):
            self.updated.append(nbytes)

        def connection_lost(self, exc):
            if not self.lost.done():
                self.lost.set_result(exc)

    async def main():
        a, b = socket.socketpair()
        tr, pr = await loop.connect_accepted_socket(Evil, a)
        b.send(b"hello")
        exc = await asyncio.wait_for(pr.lost, 5)
        c, d = kept
        with b, c, d:
            return pr.updated, exc, pending(c)

    updated, exc, still_there = run(loop, main())
    assert updated == []
    assert isinstance(exc, OSError) and exc.errno == errno.EBADF
    assert still_there == b"secret"


def test_datagram_transport_after_the_socket_was_closed(loop):
    """UDP: a read event after the close reads nothing from the socket that took the number,
    and sendto() sends nothing through it; both report the error to error_received()."""

    class Proto(asyncio.DatagramProtocol):
        def __init__(self):
            self.received = []
            self.errors = []

        def datagram_received(self, data, addr):
            self.received.append(data)

        def error_received(self, exc):
            self.errors.append(exc)

    async def main():
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        tr, pr = await loop.create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", 0), remote_addr=peer.getsockname()
        )
        await asyncio.sleep(0)
        sock = tr._sock
        fd = sock.fileno()
        sock.close()
        new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert new.fileno() == fd
        new.bind(("127.0.0.1", 0))
        new.setblocking(False)
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.sendto(b"for the new socket", new.getsockname())
        await asyncio.sleep(0.05)
        tr.sendto(b"LEAKED")
        await asyncio.sleep(0.05)
        peer.setblocking(False)
        try:
            leaked = peer.recv(100)
        except BlockingIOError:
            leaked = b""
        try:
            kept = new.recv(100)
        except BlockingIOError:
            kept = b""
        for s in (peer, new, other):
            s.close()
        tr.abort()
        return pr.received, pr.errors, leaked, kept

    received, errors, leaked, kept = run(loop, main())
    assert received == []
    assert leaked == b""
    assert kept == b"for the new socket"
    assert errors and all(isinstance(e, OSError) for e in errors)


def _alive(c, d):
    """The reused pair still works both ways and nothing else wrote to it."""
    assert pending(c) == b"" and pending(d) == b""
    c.send(b"ping")
    d.send(b"pong")
    assert d.recv(10) == b"ping" and c.recv(10) == b"pong"


def test_server_whose_listening_socket_was_closed_leaves_the_new_socket_alone(loop):
    """A server's listening socket closed under it; the server's close() must neither close nor
    unregister the socket that took its number, and no connection is accepted from it."""

    async def main():
        lsock = socket.create_server(("127.0.0.1", 0))
        srv = await loop.create_server(lambda: Recorder(loop), sock=lsock)
        fd = lsock.fileno()
        lsock.close()
        c, d = reuse(fd)
        try:
            await asyncio.sleep(0.02)
            # The stock loop's close() fails on the closed socket (its fileno() is -1) before
            # anything else; ferroloop answers the same.
            with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
                srv.close()
            await asyncio.sleep(0.02)
            assert c.fileno() == fd
            _alive(c, d)
        finally:
            c.close()
            d.close()

    run(loop, main())


def test_remove_reader_of_a_closed_socket_leaves_the_new_socket_alone(loop):
    """add_reader(sock), sock closed, its number reused: remove_reader(old sock) must not drop a
    reader registered for the new socket, and the old callback never runs for the new data."""

    async def main():
        a, b = socket.socketpair()
        old_calls = []
        loop.add_reader(a, old_calls.append, "old")
        fd = a.fileno()
        loop.remove_reader(a)
        a.close()
        b.close()
        c, d = reuse(fd)
        try:
            new_calls = loop.create_future()
            loop.add_reader(c, lambda: new_calls.done() or new_calls.set_result(c.recv(10)))
            # Forgotten once removed: the stock loop's answer for a closed socket is ValueError.
            with pytest.raises(ValueError):
                loop.remove_reader(a)
            d.send(b"data")
            assert await asyncio.wait_for(new_calls, 5) == b"data"
            assert old_calls == []
            loop.remove_reader(c)
        finally:
            c.close()
            d.close()

    run(loop, main())


def test_sock_recv_on_a_closed_socket_reads_no_ones_data(loop):
    """sock_recv waiting on a socket that is closed meanwhile, its number reused: the new
    socket's data is not read by the old wait."""

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        fd = a.fileno()
        waiter = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        a.close()
        b.close()
        c, d = reuse(fd)
        try:
            d.send(b"secret")
            await asyncio.sleep(0.05)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                assert waiter.result() != b"secret"
            waiter.cancel()
            assert c.recv(100) == b"secret"
        finally:
            c.close()
            d.close()

    run(loop, main())


def test_ferroloop_write_pipe_whose_pipe_was_closed_writes_to_no_one(ferro):
    """A write pipe transport over a pipe file the program closed: its writes and close() must
    not reach or close the socket that took the number. The stock loop's transport (asyncio's
    _UnixWritePipeTransport, os.write on the number it kept) writes b"LEAKED" into that socket;
    ferroloop's meets EBADF, as for a closed pipe whose number was not reused."""
    import os

    loop = ferro

    async def main():
        r, w = os.pipe()
        wfile = open(w, "wb", buffering=0)  # noqa: SIM115 - closed under the transport
        protocol = Recorder(loop)
        transport, _ = await loop.connect_write_pipe(lambda: protocol, wfile)
        wfile.close()
        c, d = reuse(w)
        try:
            loop.add_reader(c, lambda: None)
            transport.write(b"LEAKED")
            assert isinstance(await asyncio.wait_for(protocol.lost, 5), OSError)
            transport.close()
            await asyncio.sleep(0.02)
            assert c.fileno() == w
            _alive(c, d)
            # The new socket's own registration survived the old transport's clean-up.
            assert loop.remove_reader(c)
        finally:
            c.close()
            d.close()
            os.close(r)

    run(loop, main())


def test_ferroloop_read_pipe_whose_pipe_was_closed_reads_no_ones_data(ferro):
    """A read pipe transport paused, its pipe file closed by the program, the number reused:
    resume_reading() must not start reading the new socket (asyncio's transport registers the
    number again and reads it); ferroloop's sees end of file and closes."""
    import os

    loop = ferro

    async def main():
        r, w = os.pipe()
        rfile = open(r, "rb", buffering=0)  # noqa: SIM115 - closed under the transport
        protocol = Recorder(loop)
        transport, _ = await loop.connect_read_pipe(lambda: protocol, rfile)
        transport.pause_reading()
        rfile.close()
        c, d = reuse(r)
        try:
            d.send(b"secret")
            transport.resume_reading()
            assert await asyncio.wait_for(protocol.lost, 5) is None
            assert bytes(protocol.data) == b""
            assert c.recv(100) == b"secret"
            _alive(c, d)
        finally:
            c.close()
            d.close()
            os.close(w)

    run(loop, main())
