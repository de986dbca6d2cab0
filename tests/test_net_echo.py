"""Echo round trips over TCP: no byte lost or reordered, through every API style.

Protocol, BufferedProtocol (large and tiny buffers) and asyncio streams, payloads from 1 B to
16 MiB, compared by SHA-256; plus many concurrent connections.
"""

import array
import asyncio
import socket
import struct

import pytest
from net_helpers import (
    ECHO_IDS,
    ECHO_SIZES,
    BufferedEcho,
    KiB,
    MiB,
    Recorder,
    close_server,
    digest,
    echo_server,
    payload,
    raised_nofile,
    run,
)

pytestmark = pytest.mark.timeout(60)


def chunks(data: bytes, size: int):
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", ECHO_SIZES, ids=ECHO_IDS)
def test_echo_protocol(loop, size):
    data = payload(size)

    async def main():
        server, port = await echo_server(loop)
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        # Mixed write sizes: a single write, then chunked writes, then writelines.
        third = len(data) // 3
        tr.write(data[:third])
        for c in chunks(data[third : 2 * third], 7919):
            tr.write(c)
        tr.writelines(chunks(data[2 * third :], 65536))
        tr.write_eof()
        exc = await pr.done
        await close_server(server)
        return exc, pr

    exc, pr = run(loop, main())
    assert exc is None
    assert len(pr.data) == size
    assert digest(pr.data) == digest(data)
    assert pr.events[0] == "made" and pr.events[-2:] == ["eof", "lost"]


@pytest.mark.parametrize("size", ECHO_SIZES, ids=ECHO_IDS)
def test_echo_buffered_protocol(loop, size):
    data = payload(size, seed=1)

    class Client(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(32 * KiB)
            self.got = bytearray()
            self.sizehints = []
            self.done = loop.create_future()
            self.eofs = 0

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            self.sizehints.append(sizehint)
            return self.buf

        def buffer_updated(self, nbytes):
            assert 0 < nbytes <= len(self.buf)
            self.got += self.buf[:nbytes]

        def eof_received(self):
            self.eofs += 1

        def connection_lost(self, exc):
            self.done.set_result(exc)

    async def main():
        server, port = await echo_server(loop, BufferedEcho)
        tr, pr = await loop.create_connection(Client, "127.0.0.1", port)
        tr.write(data)
        tr.write_eof()
        exc = await pr.done
        await close_server(server)
        return exc, pr

    exc, pr = run(loop, main())
    assert exc is None
    assert pr.eofs == 1
    assert digest(pr.got) == digest(data)
    assert pr.sizehints and all(isinstance(h, int) for h in pr.sizehints)


@pytest.mark.parametrize("bufsize", [1, 7, 100])
@pytest.mark.parametrize("size", [1, KiB, 16 * KiB], ids=["1B", "1KiB", "16KiB"])
def test_echo_buffered_protocol_small_buffers(loop, size, bufsize):
    """A BufferedProtocol may hand out buffers smaller than what is pending."""
    data = payload(size, seed=2)
    server_protos = []

    def server_factory():
        p = BufferedEcho(bufsize)
        server_protos.append(p)
        return p

    class Client(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(bufsize)
            self.got = bytearray()
            self.done = loop.create_future()
            self.updates = []

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.updates.append(nbytes)
            self.got += self.buf[:nbytes]

        def connection_lost(self, exc):
            self.done.set_result(exc)

    async def main():
        server, port = await echo_server(loop, server_factory)
        tr, pr = await loop.create_connection(Client, "127.0.0.1", port)
        tr.write(data)
        tr.write_eof()
        exc = await pr.done
        await close_server(server)
        return exc, pr

    exc, pr = run(loop, main())
    assert exc is None
    assert bytes(pr.got) == data
    assert all(0 < n <= bufsize for n in pr.updates)
    assert len(pr.updates) >= -(-size // bufsize)
    assert len(server_protos) == 1


@pytest.mark.parametrize("size", ECHO_SIZES, ids=ECHO_IDS)
def test_echo_streams(loop, size):
    data = payload(size, seed=3)

    async def handle(reader, writer):
        while chunk := await reader.read(64 * KiB):
            writer.write(chunk)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def send():
            for c in chunks(data, 256 * KiB):
                writer.write(c)
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = await reader.read()  # until EOF
        await sender
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return got

    got = run(loop, main())
    assert len(got) == size
    assert digest(got) == digest(data)


def test_streams_readexactly_readuntil(loop):
    async def handle(reader, writer):
        line = await reader.readline()
        head = await reader.readexactly(5)
        rest = await reader.readuntil(b"!")
        writer.write(b"|".join([line, head, rest]))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for piece in (b"hel", b"lo\nABC", b"DEfoo", b"bar!tail"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        got = await reader.read()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return got

    assert run(loop, main()) == b"hello\n|ABCDE|foobar!"


def test_streams_incomplete_read(loop):
    async def handle(reader, writer):
        writer.write(b"abc")
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(asyncio.IncompleteReadError) as ei:
            await reader.readexactly(10)
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return ei.value

    err = run(loop, main())
    assert err.partial == b"abc" and err.expected == 10


def test_many_concurrent_connections(loop):
    n = 2000

    async def main():
        server, port = await echo_server(loop, backlog=2048)

        async def one(i):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            msg = f"conn-{i:05d}-".encode() * 10
            writer.write(msg)
            writer.write_eof()
            got = await reader.read()
            writer.close()
            await writer.wait_closed()
            return got == msg

        results = await asyncio.gather(*(one(i) for i in range(n)))
        await close_server(server)
        return results

    with raised_nofile() as limit:
        assert limit >= 2 * n + 100, f"RLIMIT_NOFILE hard limit {limit} too low"
        results = run(loop, main(), timeout=50)
    assert results == [True] * n


def test_many_connections_held_open_at_once(loop):
    """All connections are open simultaneously before any is closed."""
    n = 1000

    async def main():
        server_side = []

        class Srv(asyncio.Protocol):
            def connection_made(self, tr):
                server_side.append(tr)

        server = await loop.create_server(Srv, "127.0.0.1", 0, backlog=2048)
        port = server.sockets[0].getsockname()[1]
        pairs = await asyncio.gather(
            *(loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port) for _ in range(n))
        )
        # Wait until the server has accepted them all.
        for _ in range(500):
            if len(server_side) == n:
                break
            await asyncio.sleep(0.01)
        accepted = len(server_side)
        for i, tr in enumerate(server_side):
            tr.write(i.to_bytes(4, "big"))
        # Each client gets exactly the bytes its own server side wrote: map by ports.
        by_port = {tr.get_extra_info("peername")[1]: i for i, tr in enumerate(server_side)}
        await asyncio.gather(*(pr.wait_bytes(4) for _, pr in pairs))
        ok = all(
            bytes(pr.data) == by_port[tr.get_extra_info("sockname")[1]].to_bytes(4, "big")
            for tr, pr in pairs
        )
        for tr, _ in pairs:
            tr.close()
        await asyncio.gather(*(pr.done for _, pr in pairs))
        await close_server(server)
        return accepted, ok

    with raised_nofile():
        accepted, ok = run(loop, main(), timeout=50)
    assert accepted == n
    assert ok


def test_echo_large_single_write_with_raw_socket_peer(loop):
    """The loop's transport against a plain blocking socket on the other side."""
    data = payload(4 * MiB, seed=4)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    port = lsock.getsockname()[1]

    def peer():
        conn, _ = lsock.accept()
        with conn:
            got = bytearray()
            while len(got) < len(data):
                chunk = conn.recv(MiB)
                if not chunk:
                    break
                got += chunk
            conn.sendall(got)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(1024):
                pass

    async def main():
        fut = loop.run_in_executor(None, peer)
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        tr.write(data)
        await pr.eof
        tr.close()
        await pr.done
        await fut
        return pr

    try:
        pr = run(loop, main())
    finally:
        lsock.close()
    assert digest(pr.data) == digest(data)
    assert pr.lost == [None]
    assert pr.events[-2:] == ["eof", "lost"]


class ChunkRecorder(Recorder):
    def __init__(self, loop):
        super().__init__(loop)
        self.sizes: list[int] = []

    def data_received(self, data):
        self.sizes.append(len(data))
        super().data_received(data)


def _connected_pair(loop):
    """(peer, ours): a non-blocking TCP socket and the accepted one our transport will own."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    with lsock:
        peer = socket.create_connection(lsock.getsockname())
        ours, _ = lsock.accept()
    peer.setblocking(False)
    return peer, ours


def test_reads_alternate_between_bulk_and_small_messages(loop):
    """Large bursts, then one small message at a time, then a large burst ending in EOF: every
    byte arrives in order and each small message is delivered on its own. (ferroloop reads
    differently once reads are large; this covers the switch both ways and EOF after it.)"""
    big1, big2 = payload(MiB, seed=11), payload(MiB + 12345, seed=12)
    smalls = [bytes([i]) * 10 for i in range(20)]

    async def main():
        peer, ours = _connected_pair(loop)
        with peer:
            tr, pr = await loop.create_connection(lambda: ChunkRecorder(loop), sock=ours)
            await loop.sock_sendall(peer, big1)
            await pr.wait_bytes(len(big1))
            bulk_chunks = len(pr.sizes)
            expected = len(big1)
            for msg in smalls:
                await loop.sock_sendall(peer, msg)
                expected += len(msg)
                await pr.wait_bytes(expected)
            small_sizes = pr.sizes[bulk_chunks:]
            await loop.sock_sendall(peer, big2)
            peer.shutdown(socket.SHUT_WR)
            await pr.eof
            tr.close()
            await pr.done
        return pr, small_sizes

    pr, small_sizes = run(loop, main())
    assert digest(pr.data) == digest(big1 + b"".join(smalls) + big2)
    assert small_sizes == [10] * len(smalls)
    assert max(pr.sizes) <= 256 * KiB
    assert pr.events[-2:] == ["eof", "lost"]
    assert pr.lost == [None]


def test_reset_during_bulk_reads(loop):
    """A peer that resets the connection in the middle of a large transfer: connection_lost
    gets the ConnectionResetError once, and what arrived before is a prefix of what was sent."""
    data = payload(4 * MiB, seed=13)

    async def main():
        peer, ours = _connected_pair(loop)
        tr, pr = await loop.create_connection(lambda: ChunkRecorder(loop), sock=ours)
        try:
            await loop.sock_sendall(peer, data[: 2 * MiB])
            await pr.wait_bytes(MiB)
            # SO_LINGER 0: close() sends RST instead of FIN, dropping what is still unsent.
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await loop.sock_sendall(peer, data[2 * MiB : 3 * MiB])
        finally:
            peer.close()
        exc = await pr.done
        tr.close()
        return pr, exc

    pr, exc = run(loop, main())
    assert isinstance(exc, ConnectionResetError), repr(exc)
    assert pr.lost == [exc]
    assert pr.events.count("lost") == 1
    assert MiB <= len(pr.data) <= 3 * MiB
    assert pr.data == data[: len(pr.data)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: memoryview(array.array("d", [1.0, 2.0])),
        lambda: memoryview(array.array("i", [1, 2, 3])),
        lambda: memoryview(b"abcdef").cast("H"),
        lambda: memoryview(bytearray(b"abcdefgh")).cast("B", (2, 4)),
    ],
    ids=["doubles", "ints", "cast-H", "2d"],
)
def test_write_sends_any_contiguous_buffer_as_its_raw_bytes(loop, make):
    """As socket.send() takes them: any format, any shape, the bytes as they are in memory,
    whether sent at once or buffered behind earlier data."""
    data = make()
    raw = data.tobytes()
    a, b = socket.socketpair()
    b.setblocking(False)

    async def main():
        tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        tr.write(data)
        tr.pause_reading()  # nothing reads b's data back
        big = b"x" * (4 * MiB)
        tr.write(big)
        tr.write(data)  # behind what the kernel did not take yet
        got = bytearray()
        while len(got) < 2 * len(raw) + len(big):
            await asyncio.sleep(0.001)
            try:
                got += b.recv(1 << 20)
            except BlockingIOError:
                pass
        tr.close()
        await asyncio.sleep(0)
        return bytes(got), big

    try:
        got, big = run(loop, main())
    finally:
        b.close()
    assert got == raw + big + raw
