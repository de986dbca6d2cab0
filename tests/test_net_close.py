"""Close semantics of TCP transports: close/abort, connection_lost, half-close, bad writes."""

import array
import asyncio
import errno
import logging
import socket
import struct
import sys

import pytest
from net_helpers import KiB, MiB, Recorder, close_server, digest, payload, run

pytestmark = pytest.mark.timeout(60)


class KeepOpen(Recorder):
    eof_result = True


async def connected_pair(loop, server_proto=Recorder, client_proto=Recorder, **server_kw):
    """(server, client transport, client protocol, server protocol) over 127.0.0.1."""
    server_side = loop.create_future()

    def factory():
        p = server_proto(loop)
        if not server_side.done():
            server_side.set_result(p)
        return p

    server = await loop.create_server(factory, "127.0.0.1", 0, **server_kw)
    port = server.sockets[0].getsockname()[1]
    tr, pr = await loop.create_connection(lambda: client_proto(loop), "127.0.0.1", port)
    srv = await server_side
    await srv.made
    return server, tr, pr, srv


def test_close_flushes_buffered_data(loop):
    data = payload(8 * MiB, seed=20)

    async def main():
        server, tr, pr, srv = await connected_pair(loop)
        tr.write(data)
        buffered = tr.get_write_buffer_size()
        tr.close()
        closing = tr.is_closing()
        await pr.done
        await srv.done
        await close_server(server)
        return buffered, closing, pr, srv

    buffered, closing, pr, srv = run(loop, main())
    assert buffered > 0, "the test needs data still buffered when close() is called"
    assert closing
    assert pr.lost == [None]
    assert srv.lost == [None]
    assert srv.events[-2:] == ["eof", "lost"]
    assert digest(srv.data) == digest(data)


def test_connection_lost_once_with_none_after_close(loop):
    async def main():
        server, tr, pr, srv = await connected_pair(loop)
        assert not tr.is_closing()
        tr.write(b"x")
        tr.close()
        tr.close()
        tr.abort()
        await pr.done
        await asyncio.sleep(0.05)
        await srv.done
        await close_server(server)
        return pr, tr, srv

    pr, tr, srv = run(loop, main())
    assert pr.lost == [None]
    assert pr.events.count("lost") == 1
    assert tr.is_closing()
    assert bytes(srv.data) == b"x"


def test_connection_lost_is_not_called_synchronously_by_close(loop):
    async def main():
        server, tr, pr, srv = await connected_pair(loop)
        tr.close()
        sync = list(pr.lost)
        await pr.done
        await close_server(server)
        return sync, pr

    sync, pr = run(loop, main())
    assert sync == []
    assert pr.lost == [None]


def test_abort_drops_buffered_data(loop):
    total = 32 * MiB
    data = payload(total, seed=21)

    class Paused(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        server, tr, pr, srv = await connected_pair(loop, server_proto=Paused)
        tr.write(data)
        await asyncio.sleep(0.1)
        buffered = tr.get_write_buffer_size()
        tr.abort()
        closing = tr.is_closing()
        after = tr.get_write_buffer_size()
        srv.transport.resume_reading()
        await pr.done
        await srv.done
        await close_server(server)
        return buffered, closing, after, pr, srv

    buffered, closing, after, pr, srv = run(loop, main())
    assert buffered > 0
    assert closing
    assert after == 0
    assert pr.lost == [None]
    assert pr.events.count("lost") == 1
    assert len(srv.data) < total
    # What did arrive is an intact prefix.
    assert bytes(srv.data) == data[: len(srv.data)]


def test_connection_lost_with_exception_after_peer_reset(loop):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    lsock.setblocking(False)

    async def main():
        port = lsock.getsockname()[1]
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        conn, _ = await loop.sock_accept(lsock)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST
        exc = await pr.done
        return exc, pr, tr

    try:
        exc, pr, tr = run(loop, main())
    finally:
        lsock.close()
    assert isinstance(exc, ConnectionResetError)
    assert exc.errno == errno.ECONNRESET
    assert pr.lost == [exc]
    assert "eof" not in pr.events
    assert tr.is_closing()


def test_write_to_reset_peer_reports_error(loop):
    """Writing into a connection the peer reset ends in connection_lost(OSError)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    lsock.setblocking(False)

    async def main():
        port = lsock.getsockname()[1]
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        tr.pause_reading()  # only the write path can notice the reset
        conn, _ = await loop.sock_accept(lsock)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        await asyncio.sleep(0.05)
        for _ in range(50):
            if pr.lost:
                break
            tr.write(b"z" * KiB)
            await asyncio.sleep(0.01)
        await pr.done
        return pr

    try:
        pr = run(loop, main())
    finally:
        lsock.close()
    assert len(pr.lost) == 1
    assert isinstance(pr.lost[0], (ConnectionResetError, BrokenPipeError))


def test_write_after_close_is_ignored_then_logged(loop, caplog):
    """asyncio drops writes after close; from the 5th one on it logs a warning."""

    async def main():
        server, tr, pr, srv = await connected_pair(loop)
        tr.close()
        await pr.done
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            tr.write(b"dropped-1")
            first = [r.getMessage() for r in caplog.records]
            for _i in range(9):
                tr.write(b"dropped")
            later = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        await srv.done
        await close_server(server)
        return first, later, srv

    first, later, srv = run(loop, main())
    assert first == []
    assert later and all(m == "socket.send() raised exception." for m in later)
    assert len(later) == 6  # writes 5..10 after the connection was lost
    assert b"dropped" not in srv.data


def test_write_type_errors(loop):
    async def main():
        server, tr, pr, srv = await connected_pair(loop)
        errors = []
        for bad in ("text", 123, None, [b"a"]):
            try:
                tr.write(bad)
            except TypeError as e:
                errors.append(str(e))
        tr.write(b"")  # no-op
        tr.write(bytearray(b"ba"))
        tr.write(memoryview(b"xxmvxx")[2:4])
        tr.writelines([b"l1", bytearray(b"l2"), memoryview(b"l3")])
        tr.write_eof()
        await srv.eof
        tr.close()
        await pr.done
        await close_server(server)
        return errors, bytes(srv.data)

    errors, got = run(loop, main())
    assert len(errors) == 4
    # 3.14 names the accepted types.
    if sys.version_info >= (3, 14):
        assert (
            "data argument must be a bytes, bytearray, or memoryview object, not 'str'" in errors[0]
        )
    else:
        assert "data argument must be a bytes-like object, not 'str'" in errors[0]
    assert got == b"bamvl1l2l3"


def test_write_eof_half_close(loop):
    async def main():
        server, tr, pr, srv = await connected_pair(loop, server_proto=KeepOpen)
        can = tr.can_write_eof()
        tr.write(b"request")
        tr.write_eof()
        tr.write_eof()  # idempotent
        with pytest.raises(RuntimeError):
            tr.write(b"more")
        await srv.eof
        # eof_received returned True: the server side can still write.
        server_closing_after_eof = srv.transport.is_closing()
        srv.transport.write(b"reply to " + bytes(srv.data))
        srv.transport.close()
        await pr.done
        await srv.done
        await close_server(server)
        return can, server_closing_after_eof, pr, srv

    can, srv_closing, pr, srv = run(loop, main())
    assert can is True
    assert srv_closing is False
    assert bytes(pr.data) == b"reply to request"
    assert pr.events == ["made", "data", "eof", "lost"]
    assert pr.lost == [None]
    assert srv.events == ["made", "data", "eof", "lost"]


@pytest.mark.parametrize("result", [None, False])
def test_eof_received_falsy_closes_transport(loop, result):
    class Closer(Recorder):
        eof_result = result

    async def main():
        server, tr, pr, srv = await connected_pair(loop, server_proto=Closer)
        tr.write(b"hi")
        tr.write_eof()
        await srv.eof
        closing = srv.transport.is_closing()
        await srv.done
        await pr.done
        await close_server(server)
        return closing, pr, srv

    closing, pr, srv = run(loop, main())
    assert closing is True
    assert srv.lost == [None]
    assert pr.events == ["made", "eof", "lost"]
    assert pr.lost == [None]


def test_client_eof_received_true_keeps_writing(loop):
    """The client side too: eof_received() -> True leaves the write side usable."""

    async def main():
        server, tr, pr, srv = await connected_pair(loop, client_proto=KeepOpen)
        srv.transport.write_eof()
        await pr.eof
        client_closing = tr.is_closing()
        tr.write(b"after-eof")
        tr.close()
        await srv.done
        await pr.done
        await close_server(server)
        return client_closing, srv

    client_closing, srv = run(loop, main())
    assert client_closing is False
    assert bytes(srv.data) == b"after-eof"


def test_data_received_exception_is_fatal(loop):
    contexts = []
    boom = ValueError("boom")

    class Exploding(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise boom

    async def main():
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        server, tr, pr, srv = await connected_pair(loop, client_proto=Exploding)
        srv.transport.write(b"trigger")
        exc = await pr.done
        await srv.done
        await close_server(server)
        return exc, pr

    exc, pr = run(loop, main())
    assert exc is boom
    assert pr.lost == [boom]
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Fatal error: protocol.data_received() call failed."
    assert contexts[0]["exception"] is boom
    assert contexts[0]["protocol"] is pr


def test_empty_get_buffer_is_fatal(loop):
    contexts = []

    class Empty(asyncio.BufferedProtocol):
        def __init__(self, loop):
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return bytearray()

        def buffer_updated(self, nbytes):
            raise AssertionError("not reached")

        def connection_lost(self, exc):
            self.done.set_result(exc)

    async def main():
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        server, tr, pr, srv = await connected_pair(loop, client_proto=Empty)
        srv.transport.write(b"trigger")
        exc = await pr.done
        await srv.done
        await close_server(server)
        return exc

    exc = run(loop, main())
    assert isinstance(exc, RuntimeError)
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Fatal error: protocol.get_buffer() call failed."
    assert contexts[0]["exception"] is exc


def test_peer_close_delivers_eof_then_lost(loop):
    async def main():
        server, tr, pr, srv = await connected_pair(loop)
        srv.transport.write(b"last words")
        srv.transport.close()
        await pr.done
        await srv.done
        await close_server(server)
        return pr, tr

    pr, tr = run(loop, main())
    assert bytes(pr.data) == b"last words"
    assert pr.events == ["made", "data", "eof", "lost"]
    assert pr.lost == [None]
    assert tr.is_closing()


class _Swapping(asyncio.BufferedProtocol):
    """Sets ``successor`` as the transport's protocol from inside its first get_buffer()."""

    def __init__(self, successor):
        self.successor = successor
        self.buf = bytearray(64)
        self.updated = []

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.transport.set_protocol(self.successor)
        return self.buf

    def buffer_updated(self, nbytes):
        self.updated.append(nbytes)

    def eof_received(self):
        self.updated.append("eof")

    def connection_lost(self, exc):
        self.updated.append(("lost", exc))


def _swap_in_get_buffer(loop, successor, send):
    a, b = socket.socketpair()
    contexts = []
    first = _Swapping(successor)

    async def main():
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        tr, _ = await loop.connect_accepted_socket(lambda: first, a)
        send(b)
        await asyncio.wait_for(successor.done, 5)
        return tr

    try:
        tr = run(loop, main())
        tr.close()
        run(loop, asyncio.sleep(0))
    finally:
        b.close()
    return first, contexts


def test_set_protocol_in_get_buffer_hands_the_bytes_to_the_new_protocol(loop):
    """asyncio's _read_ready__get_buffer calls buffer_updated() on the protocol set by then,
    although the bytes landed in the old one's buffer."""

    class Next(asyncio.BufferedProtocol):
        def __init__(self):
            self.done = loop.create_future()

        def get_buffer(self, sizehint):
            raise AssertionError("not reached")

        def buffer_updated(self, nbytes):
            self.done.set_result(nbytes)

    successor = Next()
    first, contexts = _swap_in_get_buffer(loop, successor, lambda b: b.send(b"hello"))
    assert successor.done.result() == 5
    assert first.updated == []
    assert bytes(first.buf[:5]) == b"hello"
    assert contexts == []


def test_set_protocol_in_get_buffer_to_a_plain_protocol_is_fatal(loop):
    """A plain Protocol set from get_buffer() has no buffer_updated(): a fatal error, the
    connection closed, the new protocol told."""

    class Plain(asyncio.Protocol):
        def __init__(self):
            self.done = loop.create_future()

        def connection_lost(self, exc):
            self.done.set_result(exc)

    successor = Plain()
    first, contexts = _swap_in_get_buffer(loop, successor, lambda b: b.send(b"hello"))
    exc = successor.done.result()
    assert isinstance(exc, AttributeError)
    assert [c["message"] for c in contexts] == [
        "Fatal error: protocol.buffer_updated() call failed."
    ]
    assert contexts[0]["exception"] is exc
    assert first.updated == []


def test_set_protocol_in_get_buffer_then_eof_goes_to_the_new_protocol(loop):
    class Next(asyncio.BufferedProtocol):
        def __init__(self):
            self.done = loop.create_future()

        def get_buffer(self, sizehint):
            raise AssertionError("not reached")

        def buffer_updated(self, nbytes):
            raise AssertionError("not reached")

        def eof_received(self):
            self.done.set_result("eof")

    successor = Next()
    first, contexts = _swap_in_get_buffer(loop, successor, lambda b: b.shutdown(socket.SHUT_WR))
    assert successor.done.result() == "eof"
    assert first.updated == []
    assert contexts == []


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: memoryview(array.array("i", [0] * 4)), 8),
        (lambda: memoryview(bytearray(16)).cast("B", (4, 4)), 8),
        (
            lambda: b"read-only",
            (
                "Fatal read error on socket transport",
                TypeError,
                "recv_into() argument 1 must be read-write bytes-like object, not bytes",
            ),
        ),
        (
            lambda: memoryview(bytearray(16))[::2],
            (
                "Fatal read error on socket transport",
                TypeError,
                "recv_into() argument 1 must be read-write bytes-like object, not memoryview",
            ),
        ),
        (
            object,
            (
                "Fatal error: protocol.get_buffer() call failed.",
                TypeError,
                "object of type 'object' has no len()",
            ),
        ),
    ],
    ids=["ints", "2d", "bytes", "strided", "object"],
)
def test_get_buffer_result_is_taken_as_recv_into_takes_it(loop, make, expected):
    """asyncio checks len(buf), then recv_into(buf): any writable C-contiguous buffer, of any
    format, is filled; anything else is recv_into()'s TypeError, a fatal read error."""
    a, b = socket.socketpair()
    contexts = []
    buf = make()

    class P(asyncio.BufferedProtocol):
        def __init__(self):
            self.done = loop.create_future()

        def get_buffer(self, sizehint):
            return buf

        def buffer_updated(self, nbytes):
            self.done.set_result(nbytes)

        def connection_lost(self, exc):
            if not self.done.done():
                self.done.set_result(exc)

    async def main():
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        tr, pr = await loop.connect_accepted_socket(P, a)
        b.send(b"abcdefgh")
        got = await asyncio.wait_for(pr.done, 5)
        tr.close()
        await asyncio.sleep(0)
        return got

    try:
        got = run(loop, main())
    finally:
        b.close()
    if isinstance(expected, int):
        assert got == expected
        assert bytes(memoryview(buf).cast("B"))[:8] == b"abcdefgh"
        assert contexts == []
    else:
        message, exc_type, text = expected
        assert [c["message"] for c in contexts] == [message]
        assert type(contexts[0]["exception"]) is exc_type
        assert str(contexts[0]["exception"]) == text
        assert got is contexts[0]["exception"]
