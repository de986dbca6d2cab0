"""loop.sendfile() on stream transports and loop.sock_sendfile() on raw sockets.

The zero-copy path (os.sendfile) for regular files: content, offset/count, the file position
afterwards; the fallback for files without a file descriptor; byte order when sendfile and
write() interleave; errors: closing transport, write() during sendfile, peer closing mid-transfer,
cancellation, and asyncio's argument checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import socket
import ssl
import struct
import sys
from asyncio import unix_events

import pytest
from net_helpers import (
    KiB,
    MiB,
    Recorder,
    close_server,
    digest,
    echo_server,
    fd_count,
    first_accepted,
    payload,
    run,
    settle_fds,
)

pytestmark = pytest.mark.timeout(60)

SPARSE_SIZE = 64 * MiB  # well beyond what loopback socket buffers can hold


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def make_file(tmp_path):
    """``make_file(data)`` -> path of a regular file holding ``data``."""
    counter = iter(range(1_000_000))

    def make(data: bytes):
        path = tmp_path / f"file{next(counter)}.bin"
        path.write_bytes(data)
        return path

    return make


@pytest.fixture
def sparse_file(tmp_path):
    """A 64 MiB file of zeros that takes no disk space."""
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(SPARSE_SIZE)
    return path


async def sink_pair(loop, path=None):
    """A client transport and the server side's Recorder, which collects until EOF."""
    factory, accepted = first_accepted(loop, lambda: Recorder(loop))
    if path is None:
        server, port = await echo_server(loop, factory)
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
    else:
        server = await loop.create_unix_server(factory, path)
        tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), path)
    srv = await accepted
    await srv.made
    return server, tr, pr, srv


async def finish(server, tr, pr, srv):
    """Half-close the client; the server closes after EOF; wait for both ends to be gone."""
    tr.write_eof()
    await srv.done
    await pr.done
    await close_server(server)
    return bytes(srv.data)


async def raw_peer(loop):
    """A client transport (connection_made done) and the accepted plain socket of its peer."""
    lsock = socket.socket()
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        conn, _ = await loop.sock_accept(lsock)
    finally:
        lsock.close()
    await pr.made
    return tr, pr, conn


@contextlib.asynccontextmanager
async def tcp_socket_pair(loop):
    """Two connected non-blocking TCP sockets (client, server), closed on exit."""
    lsock = socket.socket()
    client = socket.socket()
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.setblocking(False)
        client.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(lsock))
        await loop.sock_connect(client, lsock.getsockname())
        conn, _ = await accept
    except BaseException:
        client.close()
        raise
    finally:
        lsock.close()
    try:
        yield client, conn
    finally:
        client.close()
        conn.close()


async def recv_all(loop, sock) -> bytes:
    got = bytearray()
    while chunk := await loop.sock_recv(sock, 256 * KiB):
        got += chunk
    return bytes(got)


async def recv_until(loop, sock, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(sock, min(256 * KiB, n - len(got)))
        if not chunk:
            break
        got += chunk
    return bytes(got)


# 3.14's native sendfile seeks the file to offset + sent whatever was sent (its
# _sock_sendfile_update_filepos lost the total_sent argument), also when nothing could be: a pipe
# then fails with ESPIPE instead of SendfileNotAvailableError. Before, it seeks only after a send.
SENDFILE_ALWAYS_SEEKS = (
    len(
        inspect.signature(
            unix_events._UnixSelectorEventLoop._sock_sendfile_update_filepos
        ).parameters
    )
    == 3
)


def expected_position(initial: int, offset: int, sent: int) -> int:
    """asyncio: the position is set to offset + sent (before 3.14: if anything was sent, else
    left untouched)."""
    return offset + sent if sent or SENDFILE_ALWAYS_SEEKS else initial


def native_sendfile_of_a_pipe_raises():
    """What the running asyncio's native sendfile of a pipe raises (see SENDFILE_ALWAYS_SEEKS)."""
    if SENDFILE_ALWAYS_SEEKS:
        return pytest.raises(OSError, match=r"\[Errno 29\] Illegal seek")
    return pytest.raises(asyncio.SendfileNotAvailableError)


def reset_peer(sock):
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def reset_mid_transfer(loop, transfer, conn, f):
    """Start ``transfer`` (a sendfile coroutine reading ``f``), reset the peer ``conn`` once a
    byte has arrived; the transfer must fail: (first byte, its ConnectionError, f's position)."""
    task = asyncio.ensure_future(transfer)
    try:
        first = await loop.sock_recv(conn, 1)
    finally:
        reset_peer(conn)
    with pytest.raises(ConnectionError) as ei:
        await task
    return first, ei.value, f.tell()


async def cancel_mid_transfer(loop, transfer, conn) -> bytearray:
    """Start ``transfer`` (a sendfile coroutine), cancel it once ``conn`` has received a byte;
    it must end cancelled: the byte received."""
    task = asyncio.ensure_future(transfer)
    got = bytearray(await loop.sock_recv(conn, 1))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return got


async def recv_through(loop, sock, got: bytearray, marker: bytes) -> None:
    """Receive into ``got`` until it ends with ``marker``; EOF before that fails."""
    while not got.endswith(marker):
        chunk = await loop.sock_recv(sock, 256 * KiB)
        assert chunk, f"EOF before {marker!r}"
        got += chunk


# -- loop.sendfile: the native path -------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 64 * KiB + 1, 16 * MiB], ids=["empty", "1B", "64KiB+1", "16MiB"]
)
def test_sendfile_whole_file(loop, make_file, size):
    data = payload(size, seed=31)
    path = make_file(data)

    async def main():
        server, tr, pr, srv = await sink_pair(loop)
        with open(path, "rb") as f:
            sent = await loop.sendfile(tr, f, fallback=False)
            pos = f.tell()
        reading = tr.is_reading()
        got = await finish(server, tr, pr, srv)
        return sent, pos, reading, got

    sent, pos, reading, got = run(loop, main(), timeout=50)
    assert sent == size
    assert pos == size
    assert reading  # reading is resumed after the transfer
    assert len(got) == size and digest(got) == digest(data)


SIZE = 200 * KiB + 17
OFFSET_COUNT = [
    (0, None),
    (1000, None),
    (1000, 5000),
    (0, 1),
    (SIZE - 10, 100),  # count past EOF: only what is there
    (SIZE, None),  # offset at EOF: nothing is sent
    (SIZE + 5000, 10),  # offset past EOF: nothing is sent
    (123, SIZE - 123),
]


@pytest.mark.parametrize("offset,count", OFFSET_COUNT)
def test_sendfile_offset_count_and_position(loop, make_file, offset, count):
    data = payload(SIZE, seed=32)
    path = make_file(data)
    end = len(data) if count is None else offset + count
    expected = data[offset:end]

    async def main():
        server, tr, pr, srv = await sink_pair(loop)
        with open(path, "rb") as f:
            f.seek(7)  # the native path reads from `offset`, not from the current position
            sent = await loop.sendfile(tr, f, offset, count, fallback=False)
            pos = f.tell()
        got = await finish(server, tr, pr, srv)
        return sent, pos, got

    sent, pos, got = run(loop, main())
    assert sent == len(expected)
    assert got == expected
    assert pos == expected_position(7, offset, sent)


def test_sendfile_over_unix_socket(loop, make_file, tmp_path):
    data = payload(3 * MiB, seed=33)
    path = make_file(data)

    async def main():
        server, tr, pr, srv = await sink_pair(loop, str(tmp_path / "sf.sock"))
        with open(path, "rb") as f:
            sent = await loop.sendfile(tr, f, 10, fallback=False)
        got = await finish(server, tr, pr, srv)
        return sent, got

    sent, got = run(loop, main())
    assert sent == len(data) - 10
    assert digest(got) == digest(data[10:])


def test_sendfile_and_write_interleave_in_order(loop, make_file):
    """Data written before sendfile() is flushed first; writes after it follow it."""
    a = payload(MiB + 3, seed=34)
    b = payload(300 * KiB, seed=35)
    big = payload(16 * MiB, seed=36)  # more than the socket buffers: it is still buffered
    pa, pb = make_file(a), make_file(b)

    async def main():
        server, tr, pr, srv = await sink_pair(loop)
        srv.transport.pause_reading()  # make sure the big write stays buffered
        tr.write(b"<head>")
        tr.write(big)
        buffered = tr.get_write_buffer_size()
        loop.call_later(0.05, srv.transport.resume_reading)
        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            n1 = await loop.sendfile(tr, fa)
            tr.write(b"<mid>")
            n2 = await loop.sendfile(tr, fb, 100, 5000)
            tr.writelines([b"<x>", b"<y>"])
            n3 = await loop.sendfile(tr, fa, len(a) - 3)
        tr.write(b"<tail>")
        got = await finish(server, tr, pr, srv)
        return buffered, (n1, n2, n3), got

    buffered, ns, got = run(loop, main(), timeout=50)
    assert buffered > 0
    assert ns == (len(a), 5000, 3)
    expected = b"<head>" + big + a + b"<mid>" + b[100:5100] + b"<x><y>" + a[-3:] + b"<tail>"
    assert len(got) == len(expected)
    assert digest(got) == digest(expected)


def test_write_during_sendfile_raises(loop, sparse_file):
    async def main():
        tr, pr, conn = await raw_peer(loop)
        try:
            with open(sparse_file, "rb") as f:
                task = asyncio.ensure_future(loop.sendfile(tr, f))
                first = await loop.sock_recv(conn, 1)  # the transfer is under way
                with pytest.raises(RuntimeError) as ei:
                    tr.write(b"X")
                rest = await recv_until(loop, conn, SPARSE_SIZE - 1)
                sent = await task
            tr.write(b"after")
            after = await recv_until(loop, conn, 5)
            conn.sendall(b"back")
            await pr.wait_bytes(4)
            tr.close()
            await pr.done
        finally:
            conn.close()
        return str(ei.value), first + rest, sent, after, bytes(pr.data)

    msg, got, sent, after, back = run(loop, main(), timeout=50)
    assert msg == "unable to write; sendfile is in progress"
    assert sent == SPARSE_SIZE
    assert len(got) == SPARSE_SIZE and got.count(0) == SPARSE_SIZE  # no stray "X"
    assert after == b"after"
    assert back == b"back"  # reading was resumed


def test_sendfile_on_closing_transport_raises(loop, make_file):
    path = make_file(b"data")

    async def main():
        server, tr, pr, srv = await sink_pair(loop)
        tr.close()
        with open(path, "rb") as f:
            with pytest.raises(RuntimeError) as ei1:
                await loop.sendfile(tr, f)
            await pr.done
            with pytest.raises(RuntimeError) as ei2:
                await loop.sendfile(tr, f, fallback=False)
            pos = f.tell()
        await srv.done
        await close_server(server)
        return str(ei1.value), str(ei2.value), pos, bytes(srv.data)

    m1, m2, pos, got = run(loop, main())
    assert m1 == m2 == "Transport is closing"
    assert pos == 0
    assert got == b""


def test_sendfile_peer_reset_mid_transfer_native(loop, sparse_file):
    async def main():
        tr, pr, conn = await raw_peer(loop)
        with open(sparse_file, "rb") as f:
            outcome = await reset_mid_transfer(loop, loop.sendfile(tr, f, fallback=False), conn, f)
        tr.close()
        await pr.done
        return outcome

    settle_fds()
    before = fd_count()
    first, err, pos = run(loop, main())
    settle_fds()
    assert first == b"\0"
    assert isinstance(err, ConnectionError)
    # The position tells how much was sent: something, not everything.
    assert 0 < pos < SPARSE_SIZE
    assert fd_count() == before


def test_sendfile_peer_reset_mid_transfer_fallback(loop):
    data = payload(32 * MiB, seed=37)

    async def main():
        tr, pr, conn = await raw_peer(loop)
        f = io.BytesIO(data)
        first, err, pos = await reset_mid_transfer(loop, loop.sendfile(tr, f), conn, f)
        exc = await pr.done
        tr.close()
        return first, err, pos, exc, pr.events

    settle_fds()
    before = fd_count()
    first, err, pos, exc, events = run(loop, main())
    settle_fds()
    assert first == data[:1]
    assert isinstance(err, ConnectionError)
    assert 0 < pos < len(data)
    # The application's protocol hears of the loss (once), through the fallback's protocol.
    assert events == ["made", "lost"]
    assert isinstance(exc, ConnectionError)
    assert fd_count() == before


def test_sendfile_peer_reset_while_flushing_earlier_writes(loop, make_file):
    """sendfile() first waits for the write buffer to drain; a reset then fails it."""
    big = payload(16 * MiB, seed=44)
    path = make_file(b"never sent")

    async def main():
        tr, pr, conn = await raw_peer(loop)
        tr.write(big)
        buffered = tr.get_write_buffer_size()
        with open(path, "rb") as f:
            sendfile = loop.sendfile(tr, f, fallback=False)
            first, err, pos = await reset_mid_transfer(loop, sendfile, conn, f)
        exc = await pr.done
        tr.close()
        return buffered, first, err, pos, exc, pr.lost

    # 3.11's asyncio also reports an InvalidStateError here (its _call_connection_lost sets
    # the already failed empty waiter again); that is not part of the behaviour under test.
    loop.set_exception_handler(lambda lp, ctx: None)
    buffered, first, err, pos, exc, lost = run(loop, main())
    assert buffered > 0
    assert first == big[:1]
    assert isinstance(err, ConnectionError)
    assert pos == 0  # nothing of the file was sent
    assert isinstance(exc, ConnectionError) and len(lost) == 1


def test_sendfile_cancelled_leaves_transport_usable(loop, sparse_file):
    async def main():
        tr, pr, conn = await raw_peer(loop)
        try:
            with open(sparse_file, "rb") as f:
                got = await cancel_mid_transfer(loop, loop.sendfile(tr, f, fallback=False), conn)
            tr.write(b"AFTER")  # the write that follows the cancelled sendfile
            await recv_through(loop, conn, got, b"AFTER")
            conn.sendall(b"ping")
            await pr.wait_bytes(4)
            tr.close()
            await pr.done
        finally:
            conn.close()
        return bytes(got), bytes(pr.data), pr.lost

    got, back, lost = run(loop, main(), timeout=50)
    assert got.endswith(b"AFTER") and got[:-5].count(0) == len(got) - 5
    assert len(got) - 5 < SPARSE_SIZE
    assert back == b"ping"
    assert lost == [None]


# -- loop.sendfile: non-regular files and the fallback -------------------------------------------


def test_sendfile_bytesio_without_fallback_raises(loop):
    async def main():
        server, tr, pr, srv = await sink_pair(loop)
        f = io.BytesIO(b"0123456789")
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sendfile(tr, f, fallback=False)
        pos = f.tell()
        # The transport is intact: writing and reading both still work.
        tr.write(b"still fine")
        srv.transport.write(b"pong")
        await pr.wait_bytes(4)
        got = await finish(server, tr, pr, srv)
        return pos, got, bytes(pr.data)

    pos, got, back = run(loop, main())
    assert pos == 0
    assert got == b"still fine"
    assert back == b"pong"


def test_sendfile_pipe_without_fallback_raises(loop):
    data = payload(10 * KiB, seed=38)

    async def main():
        server, tr, pr, srv = await sink_pair(loop)
        r, w = os.pipe()
        try:
            os.write(w, data)
        finally:
            os.close(w)
        with open(r, "rb", buffering=0) as f:
            with native_sendfile_of_a_pipe_raises():
                await loop.sendfile(tr, f, 0, len(data), fallback=False)
            left = f.read()
        tr.write(b"after")
        got = await finish(server, tr, pr, srv)
        return left, got

    left, got = run(loop, main())
    assert left == data  # nothing was consumed from the pipe
    assert got == b"after"


@pytest.mark.parametrize(
    "offset,count",
    [(0, None), (5, None), (5, 1000), (0, 16 * KiB + 1), (3 * MiB - 1, 10)],
)
def test_sendfile_bytesio_fallback(loop, offset, count):
    data = payload(3 * MiB, seed=39)
    end = len(data) if count is None else offset + count
    expected = data[offset:end]

    async def main():
        server, tr, pr, srv = await sink_pair(loop)
        f = io.BytesIO(data)
        tr.write(b"<")
        sent = await loop.sendfile(tr, f, offset, count)
        tr.write(b">")
        pos = f.tell()
        reading = tr.is_reading()
        protocol_restored = tr.get_protocol() is pr
        got = await finish(server, tr, pr, srv)
        return sent, pos, reading, protocol_restored, got

    sent, pos, reading, restored, got = run(loop, main())
    assert sent == len(expected)
    assert pos == offset + sent
    assert reading and restored
    assert digest(got) == digest(b"<" + expected + b">")


def test_sendfile_fallback_respects_flow_control(loop, flavor, request):
    """A paused reader: the fallback stops reading the file near the high-water mark."""
    if flavor.name == "asyncio" and sys.version_info >= (3, 12):
        # CPython's own bug, not ours: from 3.12 the selector transport keeps a memoryview of
        # what it could not send, and the fallback reuses that buffer for its next file read.
        request.applymarker(
            pytest.mark.xfail(reason="stock asyncio 3.12+ corrupts data in sendfile's fallback")
        )
    data = payload(32 * MiB, seed=40)
    high = 64 * KiB

    async def main():
        server, tr, pr, srv = await sink_pair(loop)
        tr.set_write_buffer_limits(high=high)
        srv.transport.pause_reading()
        f = io.BytesIO(data)
        task = asyncio.ensure_future(loop.sendfile(tr, f))
        # Step the loop (one executor round trip at a time, as the fallback reads) until the
        # file position stops moving while the transport holds data.
        largest, unchanged, last = 0, 0, -1
        for _ in range(20000):
            await loop.run_in_executor(None, int)
            size = tr.get_write_buffer_size()
            largest = max(largest, size)
            pos = f.tell()
            unchanged = unchanged + 1 if size and pos == last else 0
            last = pos
            if unchanged >= 20:
                break
        stalled = (unchanged >= 20, task.done(), f.tell())
        srv.transport.resume_reading()
        sent = await task
        got = await finish(server, tr, pr, srv)
        return largest, stalled, sent, got

    largest, (stopped, done, pos), sent, got = run(loop, main(), timeout=50)
    assert stopped and not done and pos < len(data)
    # The fallback writes 16 KiB blocks and waits for resume_writing() above the mark.
    assert 0 < largest <= high + 16 * KiB
    assert sent == len(data)
    assert digest(got) == digest(data)


# -- loop.sock_sendfile --------------------------------------------------------------------------


@pytest.mark.parametrize("offset,count", OFFSET_COUNT)
def test_sock_sendfile_offset_count_and_position(loop, make_file, offset, count):
    data = payload(SIZE, seed=41)
    path = make_file(data)
    end = len(data) if count is None else offset + count
    expected = data[offset:end]

    async def main():
        async with tcp_socket_pair(loop) as (client, conn):
            reader = asyncio.ensure_future(recv_all(loop, conn))
            with open(path, "rb") as f:
                f.seek(3)
                sent = await loop.sock_sendfile(client, f, offset, count, fallback=False)
                pos = f.tell()
            client.shutdown(socket.SHUT_WR)
            got = await reader
        return sent, pos, got

    sent, pos, got = run(loop, main())
    assert sent == len(expected)
    assert got == expected
    assert pos == expected_position(3, offset, sent)


def test_sock_sendfile_large_file_and_sendall_interleaved(loop, make_file):
    data = payload(16 * MiB, seed=42)
    path = make_file(data)

    async def main():
        async with tcp_socket_pair(loop) as (client, conn):
            reader = asyncio.ensure_future(recv_all(loop, conn))
            await loop.sock_sendall(client, b"[")
            with open(path, "rb") as f:
                n1 = await loop.sock_sendfile(client, f)
                await loop.sock_sendall(client, b"|")
                n2 = await loop.sock_sendfile(client, f, 1, 2)
            await loop.sock_sendall(client, b"]")
            client.shutdown(socket.SHUT_WR)
            got = await reader
        return n1, n2, got

    n1, n2, got = run(loop, main(), timeout=50)
    assert (n1, n2) == (len(data), 2)
    assert digest(got) == digest(b"[" + data + b"|" + data[1:3] + b"]")


def test_sock_sendfile_non_regular_files(loop):
    data = payload(20 * KiB, seed=43)

    async def main():
        async with tcp_socket_pair(loop) as (client, conn):
            reader = asyncio.ensure_future(recv_all(loop, conn))
            f = io.BytesIO(data)
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(client, f, fallback=False)
            pos_after_fail = f.tell()
            sent = await loop.sock_sendfile(client, f, 100, 10 * KiB)
            pos = f.tell()
            r, w = os.pipe()
            try:
                os.write(w, b"pipe data")
            finally:
                os.close(w)
            with open(r, "rb", buffering=0) as p:
                with native_sendfile_of_a_pipe_raises():
                    await loop.sock_sendfile(client, p, 0, 9, fallback=False)
                left = p.read()
            client.shutdown(socket.SHUT_WR)
            got = await reader
        return pos_after_fail, sent, pos, left, got

    pos_after_fail, sent, pos, left, got = run(loop, main())
    assert pos_after_fail == 0
    assert sent == 10 * KiB and pos == 100 + 10 * KiB
    assert left == b"pipe data"
    assert got == data[100 : 100 + 10 * KiB]


def test_sock_sendfile_peer_reset_raises_connection_error(loop, sparse_file):
    async def main():
        async with tcp_socket_pair(loop) as (client, conn):
            with open(sparse_file, "rb") as f:
                sendfile = loop.sock_sendfile(client, f, fallback=False)
                first, err, pos = await reset_mid_transfer(loop, sendfile, conn, f)
            no_writer_left = not loop.remove_writer(client.fileno())
        return first, err, pos, no_writer_left

    first, err, pos, no_writer_left = run(loop, main())
    assert first == b"\0"
    assert isinstance(err, ConnectionError)
    assert 0 < pos < SPARSE_SIZE
    assert no_writer_left


def test_sock_sendfile_cancelled_removes_its_writer(loop, sparse_file):
    async def main():
        async with tcp_socket_pair(loop) as (client, conn):
            with open(sparse_file, "rb") as f:
                sendfile = loop.sock_sendfile(client, f, fallback=False)
                got = await cancel_mid_transfer(loop, sendfile, conn)
            await asyncio.sleep(0)
            no_writer_left = not loop.remove_writer(client.fileno())
            # The send queue may still be full of file data: read while sending.
            sender = asyncio.ensure_future(loop.sock_sendall(client, b"END"))
            await recv_through(loop, conn, got, b"END")
            await sender
        return no_writer_left, bytes(got)

    no_writer_left, got = run(loop, main(), timeout=50)
    assert no_writer_left
    assert got.endswith(b"END") and got[:-3].count(0) == len(got) - 3


# -- argument checks ----------------------------------------------------------------------------

BAD_ARGS = [
    # (offset, count, text mode, expected type, expected message)
    (-1, None, False, ValueError, "offset must be a non-negative integer (got -1)"),
    ("0", None, False, TypeError, "offset must be a non-negative integer (got '0')"),
    (1.0, None, False, TypeError, "offset must be a non-negative integer (got 1.0)"),
    (0, 0, False, ValueError, "count must be a positive integer (got 0)"),
    (0, -5, False, ValueError, "count must be a positive integer (got -5)"),
    (0, 1.5, False, TypeError, "count must be a positive integer (got 1.5)"),
    (0, "10", False, TypeError, "count must be a positive integer (got '10')"),
    (0, None, True, ValueError, "file should be opened in binary mode"),
]
BAD_IDS = ["neg-offset", "str-offset", "float-offset", "zero-count", "neg-count"]
BAD_IDS += ["float-count", "str-count", "text-mode"]


@pytest.mark.parametrize("offset,count,text,exc_type,message", BAD_ARGS, ids=BAD_IDS)
def test_sendfile_bad_arguments(loop, make_file, offset, count, text, exc_type, message):
    path = make_file(b"some data")

    async def main():
        server, tr, pr, srv = await sink_pair(loop)
        with open(path, "r" if text else "rb") as f:
            for fallback in (True, False):
                with pytest.raises(exc_type) as ei:
                    await loop.sendfile(tr, f, offset, count, fallback=fallback)
                assert type(ei.value) is exc_type
                assert str(ei.value) == message
        # The failed calls left the transport as it was.
        tr.write(b"ok")
        srv.transport.write(b"ok too")
        await pr.wait_bytes(6)
        got = await finish(server, tr, pr, srv)
        return got, bytes(pr.data)

    got, back = run(loop, main())
    assert got == b"ok"
    assert back == b"ok too"


@pytest.mark.parametrize("offset,count,text,exc_type,message", BAD_ARGS, ids=BAD_IDS)
def test_sock_sendfile_bad_arguments(loop, make_file, offset, count, text, exc_type, message):
    path = make_file(b"some data")

    async def main():
        async with tcp_socket_pair(loop) as (client, conn):
            with open(path, "r" if text else "rb") as f:
                for fallback in (True, False):
                    with pytest.raises(exc_type) as ei:
                        await loop.sock_sendfile(client, f, offset, count, fallback=fallback)
                    assert type(ei.value) is exc_type
                    assert str(ei.value) == message
            await loop.sock_sendall(client, b"ok")
            client.shutdown(socket.SHUT_WR)
            return await recv_all(loop, conn)

    assert run(loop, main()) == b"ok"


def test_sock_sendfile_socket_checks(loop, make_file):
    path = make_file(b"some data")

    async def main():
        messages = {}
        with open(path, "rb") as f:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.setblocking(False)
                with pytest.raises(ValueError) as ei:
                    await loop.sock_sendfile(udp, f)
                messages["udp"] = str(ei.value)
            ctx = ssl.create_default_context()
            with ctx.wrap_socket(socket.socket(), server_hostname="localhost") as tls:
                tls.setblocking(False)
                with pytest.raises(TypeError) as ei:
                    await loop.sock_sendfile(tls, f)
                messages["ssl"] = str(ei.value)
            loop.set_debug(True)
            try:
                with socket.socket() as blocking:
                    with pytest.raises(ValueError) as ei:
                        await loop.sock_sendfile(blocking, f)
                    messages["blocking"] = str(ei.value)
            finally:
                loop.set_debug(False)
        return messages

    m = run(loop, main())
    assert m["udp"] == "only SOCK_STREAM type sockets are supported"
    assert m["ssl"] == "Socket cannot be of type SSLSocket"
    assert m["blocking"] == "the socket must be non-blocking"
