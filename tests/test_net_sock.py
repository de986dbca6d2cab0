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
