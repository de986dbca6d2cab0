"""The loop's low-level socket coroutines: sock_recv, sock_recv_into, sock_sendall,
sock_connect, sock_accept; and the rules around them (non-blocking sockets, transport fds)."""

import asyncio
import socket

import pytest
from net_helpers import (
    MiB,
    Recorder,
    close_server,
    closed_port,
    digest,
    echo_server,
    fd_count,
    payload,
    run,
    settle_fds,
)

pytestmark = pytest.mark.timeout(60)


def nonblocking_pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def listener():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    lsock.setblocking(False)
    return lsock


def test_sock_accept_connect_sendall_recv_roundtrip(loop):
    data = payload(3 * MiB, seed=7)

    async def main():
        lsock = listener()
        csock = socket.socket()
        csock.setblocking(False)
        with lsock, csock:
            accept = asyncio.ensure_future(loop.sock_accept(lsock))
            await loop.sock_connect(csock, lsock.getsockname())
            conn, addr = await accept
            with conn:
                blocking_after_accept = conn.getblocking()
                sender = asyncio.ensure_future(loop.sock_sendall(csock, data))
                got = bytearray()
                while len(got) < len(data):
                    chunk = await loop.sock_recv(conn, 65536)
                    assert chunk, "EOF before all the data arrived"
                    got += chunk
                sent = await sender
                csock.shutdown(socket.SHUT_WR)
                eof = await loop.sock_recv(conn, 100)
                return addr == csock.getsockname(), blocking_after_accept, sent, got, eof

    same_addr, blocking, sent, got, eof = run(loop, main())
    assert same_addr
    # asyncio's sock_accept hands back a non-blocking socket.
    assert blocking is False
    assert sent is None
    assert digest(got) == digest(data)
    assert eof == b""


def test_sock_recv_into(loop):
    async def main():
        a, b = nonblocking_pair()
        with a, b:
            buf = bytearray(10)
            reader = asyncio.ensure_future(loop.sock_recv_into(a, buf))
            await asyncio.sleep(0)
            await loop.sock_sendall(b, b"hello")
            n = await reader
            view = memoryview(bytearray(4))
            b.send(b"abcdefgh")
            m = await loop.sock_recv_into(a, view)
            return n, bytes(buf[:n]), m, bytes(view)

    assert run(loop, main()) == (5, b"hello", 4, b"abcd")


def test_sock_recv_waits_for_data_and_can_be_cancelled(loop):
    async def main():
        a, b = nonblocking_pair()
        with a, b:
            pending = asyncio.ensure_future(loop.sock_recv(a, 100))
            await asyncio.sleep(0.01)
            waited = not pending.done()
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            # The cancelled read left no reader behind: the next one gets the data.
            b.send(b"after cancel")
            got = await asyncio.wait_for(loop.sock_recv(a, 100), 5)
            return waited, got, loop.remove_reader(a.fileno())

    assert run(loop, main()) == (True, b"after cancel", False)


def test_sock_connect_resolves_a_host_name(loop):
    async def main():
        server, port = await echo_server(loop)
        sock = socket.socket(socket.AF_INET)
        sock.setblocking(False)
        with sock:
            await loop.sock_connect(sock, ("localhost", port))
            peer = sock.getpeername()
            await loop.sock_sendall(sock, b"ping")
            got = await loop.sock_recv(sock, 10)
        await close_server(server)
        return peer, port, got

    peer, port, got = run(loop, main())
    assert peer == ("127.0.0.1", port)
    assert got == b"ping"


def test_sock_connect_refused(loop):
    port = closed_port()

    async def main():
        sock = socket.socket()
        sock.setblocking(False)
        with sock:
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(sock, ("127.0.0.1", port))
            return loop.remove_writer(sock.fileno())

    assert run(loop, main()) is False


def test_sock_accept_cancel_then_accept_again(loop):
    async def main():
        lsock = listener()
        with lsock:
            pending = asyncio.ensure_future(loop.sock_accept(lsock))
            await asyncio.sleep(0.01)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            client = socket.create_connection(lsock.getsockname())
            with client:
                conn, _ = await asyncio.wait_for(loop.sock_accept(lsock), 5)
                conn.close()
                return True

    assert run(loop, main()) is True


def test_sock_sendall_to_a_slow_reader_sends_everything(loop):
    data = payload(8 * MiB, seed=3)

    async def main():
        a, b = nonblocking_pair()
        with a, b:
            sender = asyncio.ensure_future(loop.sock_sendall(a, data))
            got = bytearray()
            while len(got) < len(data):
                await asyncio.sleep(0.001)
                got += await loop.sock_recv(b, 256 * 1024)
            await sender
            return got

    assert digest(run(loop, main())) == digest(data)


def test_sock_recv_after_peer_reset(loop):
    async def main():
        a, b = nonblocking_pair()
        with a:
            pending = asyncio.ensure_future(loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            b.close()
            return await asyncio.wait_for(pending, 5)

    assert run(loop, main()) == b""


@pytest.mark.parametrize(
    "method, args",
    [
        ("sock_recv", (10,)),
        ("sock_recv_into", (bytearray(10),)),
        ("sock_sendall", (b"x",)),
        ("sock_accept", ()),
        ("sock_connect", (("127.0.0.1", 1),)),
    ],
)
def test_blocking_socket_is_refused_in_debug_mode(loop, method, args):
    """asyncio refuses blocking sockets in debug mode (and trusts the caller otherwise)."""

    async def main():
        loop.set_debug(True)
        sock = socket.socket()
        with sock:
            assert sock.getblocking()
            with pytest.raises(ValueError, match="the socket must be non-blocking"):
                await getattr(loop, method)(sock, *args)
        loop.set_debug(False)

    run(loop, main())


def test_sock_methods_refuse_a_transports_socket(loop):
    async def main():
        server, port = await echo_server(loop)
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        fd = tr.get_extra_info("socket").fileno()
        # A second socket object over the transport's fd (detached below, so not closed).
        alias = socket.socket(fileno=fd)
        alias.setblocking(False)  # it is already, at the OS level; the object must know
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(alias, 10)
        finally:
            alias.detach()
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(fd, lambda: None)
        tr.close()
        await pr.done
        await close_server(server)

    run(loop, main())


def test_sock_methods_leak_no_fds(loop):
    async def main():
        for _ in range(20):
            lsock = listener()
            csock = socket.socket()
            csock.setblocking(False)
            with lsock, csock:
                accept = asyncio.ensure_future(loop.sock_accept(lsock))
                await loop.sock_connect(csock, lsock.getsockname())
                conn, _ = await accept
                with conn:
                    await loop.sock_sendall(conn, b"x")
                    assert await loop.sock_recv(csock, 1) == b"x"

    run(loop, main())  # warm up lazily created fds (executor, self-pipe)
    settle_fds()
    before = fd_count()
    run(loop, main())
    settle_fds()
    assert fd_count() == before


def test_a_paused_transports_fd_is_still_refused(loop):
    """asyncio refuses the fd of any live transport, even one not watching it right now."""

    async def main():
        server, port = await echo_server(loop)
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        tr.pause_reading()
        fd = tr.get_extra_info("socket").fileno()
        for method in (loop.add_reader, loop.add_writer):
            with pytest.raises(RuntimeError, match="is used by transport"):
                method(fd, lambda: None)
        for method in (loop.remove_reader, loop.remove_writer):
            with pytest.raises(RuntimeError, match="is used by transport"):
                method(fd)
        tr.close()
        await pr.done
        # A closed transport gives its fd number back.
        a, b = socket.socketpair()
        with a, b:
            loop.add_reader(a.fileno(), lambda: None)
            removed = loop.remove_reader(a.fileno())
        await close_server(server)
        return removed

    assert run(loop, main()) is True


# -- the first, optimistic recv (native on ferroloop for plain non-blocking sockets) ----------


def test_sock_recv_of_data_already_there_and_its_errors(loop):
    """Data already queued comes back at once, in pieces of at most n bytes; the socket module's
    own errors come through: a negative or non-integer size, a closed socket, a reset."""

    async def main():
        a, b = nonblocking_pair()
        with a, b:
            b.send(b"0123456789")
            first = await loop.sock_recv(a, 4)
            rest = await loop.sock_recv(a, 1000)
            zero = await loop.sock_recv(a, 0)
            errors = []
            for bad in (-1, "4", 2.5):
                with pytest.raises((ValueError, TypeError)) as ei:
                    await loop.sock_recv(a, bad)
                errors.append((type(ei.value), str(ei.value)))
            big = payload(300 * 1024, seed=51)  # more than the native path's buffer
            b.sendall(big[:100_000])
            got_big = await loop.sock_recv(a, len(big))
        with pytest.raises(OSError) as closed:
            await loop.sock_recv(a, 10)
        c, d = nonblocking_pair()
        with c:
            d.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            c.send(b"unread")  # unread data at close makes the close a reset
            d.close()
            await asyncio.sleep(0.01)
            try:
                reset = await loop.sock_recv(c, 10)
            except OSError as exc:
                reset = type(exc)
        return first, rest, zero, errors, got_big == big[:100_000], closed.value.errno, reset

    first, rest, zero, errors, big_ok, closed_errno, reset = run(loop, main())
    assert (first, rest, zero) == (b"0123", b"456789", b"")
    assert errors == [
        (ValueError, "negative buffersize in recv"),
        (TypeError, "'str' object cannot be interpreted as an integer"),
        (TypeError, "'float' object cannot be interpreted as an integer"),
    ]
    assert big_ok
    assert closed_errno == 9  # EBADF: the socket was closed
    assert reset in (b"", ConnectionResetError)


def test_sock_recv_into_of_data_already_there_and_its_errors(loop):
    async def main():
        a, b = nonblocking_pair()
        with a, b:
            b.send(b"abcdef")
            buf = bytearray(4)
            n1 = await loop.sock_recv_into(a, buf)
            first = bytes(buf)
            wide = memoryview(bytearray(8)).cast("i")  # two 4-byte items
            n2 = await loop.sock_recv_into(a, wide)
            second = wide.tobytes()[:n2]
            empty = await loop.sock_recv_into(a, bytearray())  # nothing to wait for
            with pytest.raises(TypeError) as ro:
                await loop.sock_recv_into(a, b"read-only")
            return n1, first, n2, second, empty, str(ro.value)

    n1, first, n2, second, empty, readonly = run(loop, main())
    assert (n1, first, n2, second, empty) == (4, b"abcd", 2, b"ef", 0)
    assert readonly == "recv_into() argument 1 must be read-write bytes-like object, not bytes"


def test_sock_recv_calls_a_socket_subclass_own_methods(loop):
    """A socket subclass's recv/recv_into are what the loop calls, as asyncio does."""

    class Counting(socket.socket):
        calls = 0

        def recv(self, n, *args):
            Counting.calls += 1
            return super().recv(n, *args)

        def recv_into(self, buf, *args):
            Counting.calls += 1
            return super().recv_into(buf, *args)

    async def main():
        a, b = nonblocking_pair()
        with a, b:
            sub = Counting(fileno=a.detach())
            with sub:
                sub.setblocking(False)
                b.send(b"xy")
                got = await loop.sock_recv(sub, 1)
                n = await loop.sock_recv_into(sub, bytearray(5))
                pending = asyncio.ensure_future(loop.sock_recv(sub, 10))
                await asyncio.sleep(0.01)
                b.send(b"late")
                late = await asyncio.wait_for(pending, 5)
            return got, n, late, Counting.calls

    got, n, late, calls = run(loop, main())
    assert (got, n, late) == (b"x", 1, b"late")
    # Two immediate reads, the first try of the third (nothing yet) and its read once ready.
    assert calls == 4
