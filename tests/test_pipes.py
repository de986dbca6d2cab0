"""Pipe transports: ``connect_read_pipe`` / ``connect_write_pipe`` on both loops.

Read side on an os.pipe(), a FIFO, a pty master and a socketpair end; write side on a pipe,
a FIFO, a pty slave, a socket and /dev/null. Covers callback order, pause/resume_reading,
large transfers (SHA-256), write flow control and buffer limits, write_eof/close/abort, the
write pipe noticing that its reader went away, bad input, asyncio streams on top, the
ResourceWarning of an unclosed transport and fd leaks.
"""

import asyncio
import errno
import fcntl
import gc
import hashlib
import os
import re
import socket
import sys
import threading
import tty
import warnings

import pytest
from net_helpers import KiB, MiB, Recorder, digest, fd_count, payload, run, settle_fds

pytestmark = pytest.mark.timeout(60)

MAX_READ = 256 * KiB  # asyncio's _UnixReadPipeTransport.max_size


@pytest.fixture
def pipes():
    """``pipes()`` -> (read file, write file) of a fresh os.pipe(), unbuffered.

    Whatever the test (or a transport) has not closed is closed at teardown.
    """
    made = []

    def make():
        r, w = os.pipe()
        files = (open(r, "rb", buffering=0), open(w, "wb", buffering=0))
        made.extend(files)
        return files

    yield make
    for f in made:
        if not f.closed:
            f.close()


@pytest.fixture
def handler_calls(loop):
    """Contexts passed to the loop's exception handler (which must stay silent here)."""
    calls = []
    loop.set_exception_handler(lambda _loop, ctx: calls.append(ctx))
    return calls


def pipe_capacity(f) -> int:
    return fcntl.fcntl(f.fileno(), fcntl.F_GETPIPE_SZ)


def read_to_eof(f, out: list):
    """Blocking read of ``f`` to EOF (for a thread): appends the bytes read to ``out``."""
    buf = bytearray()
    while chunk := f.read(64 * KiB):
        buf += chunk
    out.append(bytes(buf))


def start_thread(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


async def ticks(n: int = 5, delay: float = 0.01):
    """Let the loop poll a few times (reading, writing, noticing hang-ups)."""
    for _ in range(n):
        await asyncio.sleep(delay)


class ChunkRecorder(Recorder):
    """Recorder that also keeps the size of every data_received chunk."""

    def __init__(self, loop):
        super().__init__(loop)
        self.sizes = []

    def data_received(self, data):
        self.sizes.append(len(data))
        super().data_received(data)


class PausedRecorder(Recorder):
    """A read-pipe protocol that pauses its transport before the first read."""

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()


class WriteRecorder(asyncio.Protocol):
    """Write-pipe protocol: records pause/resume (with the buffer size then) and loss."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.events = []
        self.sizes = []
        self.lost = []
        self.done = loop.create_future()
        self.resumed = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def pause_writing(self):
        self.events.append("pause")
        self.sizes.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.events.append("resume")
        self.sizes.append(self.transport.get_write_buffer_size())
        if not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.append(exc)
        self.done.set_result(exc)


# --------------------------------------------------------------------------- read side


def test_read_pipe_data_eof_lost(loop, pipes, handler_calls):
    r, w = pipes()

    async def main():
        os.write(w.fileno(), b"before connect;")  # already waiting when the transport starts
        tr, pr = await loop.connect_read_pipe(lambda: Recorder(loop), r)
        assert pr.events == ["made"] and pr.transport is tr
        assert tr.get_extra_info("pipe") is r
        assert tr.get_protocol() is pr
        assert tr.is_reading() and not tr.is_closing()
        assert f"fd={r.fileno()}" in repr(tr)
        assert not os.get_blocking(r.fileno())
        await pr.wait_bytes(15)
        os.write(w.fileno(), b"second")
        await pr.wait_bytes(21)
        assert not pr.eof.done()
        w.close()
        exc = await pr.done
        return tr, pr, exc

    tr, pr, exc = run(loop, main())
    assert exc is None and pr.lost == [None]
    assert bytes(pr.data) == b"before connect;second"
    assert pr.events[0] == "made" and pr.events[-2:] == ["eof", "lost"]
    assert set(pr.events[1:-2]) == {"data"}
    assert tr.is_closing() and not tr.is_reading()
    assert r.closed  # the transport closes its pipe after connection_lost
    assert handler_calls == []


def test_read_pipe_large_from_thread(loop, pipes):
    """8 MiB written by a thread arrive intact, in chunks of at most max_size."""
    r, w = pipes()
    data = payload(8 * MiB, seed=1)

    def writer():
        w.write(data)
        w.close()

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: ChunkRecorder(loop), r)
        t = start_thread(writer)
        await pr.done
        return t, pr

    t, pr = run(loop, main(), timeout=40)
    t.join(10)
    assert len(pr.data) == len(data) and digest(pr.data) == digest(data)
    assert pr.lost == [None] and pr.events[-2:] == ["eof", "lost"]
    assert all(0 < n <= MAX_READ for n in pr.sizes)


def test_read_pipe_close_from_data_received(loop, pipes, handler_calls):
    """Closing the transport inside data_received stops delivery: no eof, lost(None)."""
    r, w = pipes()

    class CloseOnData(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.close()

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: CloseOnData(loop), r)
        os.write(w.fileno(), b"one")
        exc = await pr.done
        with pytest.raises(BrokenPipeError):  # the transport closed the read end
            os.write(w.fileno(), b"two")
        return tr, pr, exc

    tr, pr, exc = run(loop, main())
    assert exc is None
    assert pr.events == ["made", "data", "lost"]
    assert bytes(pr.data) == b"one"
    assert tr.is_closing() and r.closed
    assert handler_calls == []


def test_read_pipe_fifo(loop, tmp_path):
    """A named pipe, both ends on the loop: 1 MiB through it, then EOF."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    r = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb", buffering=0)
    w = open(os.open(path, os.O_WRONLY), "wb", buffering=0)  # a reader exists: no block
    data = payload(MiB, seed=2)

    async def main():
        rtr, rpr = await loop.connect_read_pipe(lambda: Recorder(loop), r)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        wtr.write(data)
        wtr.close()
        await wpr.done
        await rpr.done
        return rpr, wpr

    try:
        rpr, wpr = run(loop, main())
    finally:
        r.close()
        w.close()
    assert digest(rpr.data) == digest(data)
    assert rpr.events[-2:] == ["eof", "lost"] and rpr.lost == [None]
    assert wpr.lost == [None]


def test_pty_master_and_slave(loop, handler_calls):
    """Slave as a write pipe (character device), master as a read pipe.

    Closing the slave makes reads on the master fail with EIO: as asyncio, that is
    connection_lost(OSError(EIO)) without eof_received and without an exception-handler call.
    """
    master, slave = os.openpty()
    tty.setraw(slave)  # no output processing: bytes pass through unchanged
    m = open(master, "rb", buffering=0)
    s = open(slave, "wb", buffering=0)
    data = payload(64 * KiB, seed=3)

    async def main():
        rtr, rpr = await loop.connect_read_pipe(lambda: Recorder(loop), m)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), s)
        assert wtr.can_write_eof()
        wtr.write(data[:1000])
        wtr.writelines([data[1000:5000], data[5000:]])
        await rpr.wait_bytes(len(data))
        assert not rpr.done.done()
        wtr.close()  # closes the slave
        await wpr.done
        exc = await rpr.done
        return rpr, wpr, exc

    try:
        rpr, wpr, exc = run(loop, main())
    finally:
        m.close()
        s.close()
    assert bytes(rpr.data) == data
    assert wpr.lost == [None]
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert "eof" not in rpr.events and rpr.events[-1] == "lost"
    assert handler_calls == []


def test_socketpair_as_pipes(loop, handler_calls):
    """Sockets are accepted by both pipe transports."""
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    d.setblocking(False)

    async def main():
        rtr, rpr = await loop.connect_read_pipe(lambda: Recorder(loop), a)
        b.sendall(b"over a socket")
        await rpr.wait_bytes(13)
        b.shutdown(socket.SHUT_WR)
        assert await rpr.done is None

        wtr, wpr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), c)
        wtr.write(b"to the peer")
        got = await loop.sock_recv(d, 100)
        d.close()  # the write transport watches its socket for the hang-up
        exc = await wpr.done
        return rpr, got, exc

    try:
        rpr, got, exc = run(loop, main())
    finally:
        for s in (a, b, c, d):
            s.close()
    assert bytes(rpr.data) == b"over a socket"
    assert rpr.events[-2:] == ["eof", "lost"]
    assert a.fileno() == -1  # closed by the transport
    assert got == b"to the peer"
    assert exc is None and c.fileno() == -1
    assert handler_calls == []


def test_pause_resume_reading(loop, pipes):
    r, w = pipes()

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: Recorder(loop), r)
        assert tr.is_reading()
        tr.pause_reading()
        tr.pause_reading()  # idempotent
        assert not tr.is_reading()
        os.write(w.fileno(), b"held back")
        await ticks()
        assert pr.data == b"" and pr.events == ["made"]
        tr.resume_reading()
        tr.resume_reading()  # idempotent
        assert tr.is_reading()
        await pr.wait_bytes(9)
        w.close()
        await pr.done
        assert not tr.is_reading()
        tr.pause_reading()  # no-ops once closed
        tr.resume_reading()
        assert not tr.is_reading()
        return pr

    pr = run(loop, main())
    assert bytes(pr.data) == b"held back"
    assert pr.events[-2:] == ["eof", "lost"]


def test_pause_reading_in_connection_made(loop, pipes):
    """Paused before the transport's first poll: nothing is read, not even EOF."""
    r, w = pipes()

    async def main():
        os.write(w.fileno(), b"waiting")
        w.close()
        tr, pr = await loop.connect_read_pipe(lambda: PausedRecorder(loop), r)
        await ticks()
        assert not tr.is_reading() and pr.events == ["made"]
        tr.resume_reading()
        await pr.done
        return pr

    pr = run(loop, main())
    assert bytes(pr.data) == b"waiting"
    assert pr.events == ["made", "data", "eof", "lost"]


# -------------------------------------------------------------------------- write side


def test_write_pipe_write_and_writelines(loop, pipes, handler_calls):
    r, w = pipes()
    got = []
    t = start_thread(read_to_eof, r, got)

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        assert pr.events == ["made"] and pr.transport is tr
        assert tr.get_extra_info("pipe") is w
        assert not os.get_blocking(w.fileno())
        assert tr.can_write_eof() and not tr.is_closing()
        tr.write(b"bytes,")
        tr.write(bytearray(b"bytearray,"))
        tr.write(memoryview(b"memoryview,"))
        tr.write(b"")  # no-op
        tr.writelines([b"line", bytearray(b"s,"), memoryview(b"done")])
        tr.close()
        assert tr.is_closing()
        return await pr.done, pr

    exc, pr = run(loop, main())
    t.join(10)
    assert got == [b"bytes,bytearray,memoryview,lines,done"]
    assert exc is None and pr.events == ["made", "lost"]
    assert w.closed
    assert handler_calls == []


def test_write_pipe_dev_null(loop):
    """/dev/null is a character device: accepted, everything written at once."""
    f = open("/dev/null", "wb", buffering=0)

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), f)
        tr.write(payload(MiB))
        assert tr.get_write_buffer_size() == 0
        tr.close()
        return await pr.done, pr

    try:
        exc, pr = run(loop, main())
    finally:
        f.close()
    assert exc is None and pr.events == ["made", "lost"]


@pytest.mark.parametrize("peer", ["thread", "read_pipe"])
def test_write_pipe_large(loop, pipes, peer):
    """8 MiB written in mixed pieces arrive intact (reader thread or a read pipe)."""
    r, w = pipes()
    data = payload(8 * MiB, seed=4)
    got = []
    t = start_thread(read_to_eof, r, got) if peer == "thread" else None

    async def main():
        if peer == "read_pipe":
            _, rpr = await loop.connect_read_pipe(lambda: Recorder(loop), r)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        third = len(data) // 3
        wtr.write(data[:third])
        for i in range(third, 2 * third, 7919):
            wtr.write(data[i : min(i + 7919, 2 * third)])
        wtr.writelines(data[i : i + 65536] for i in range(2 * third, len(data), 65536))
        wtr.close()
        exc = await wpr.done
        if peer == "read_pipe":
            await rpr.done
            got.append(bytes(rpr.data))
        return exc, wpr

    exc, wpr = run(loop, main(), timeout=40)
    if t is not None:
        t.join(10)
    assert exc is None
    assert len(got) == 1 and len(got[0]) == len(data)
    assert hashlib.sha256(got[0]).hexdigest() == digest(data)
    assert wpr.events[0] == "made" and wpr.events[-1] == "lost"


def test_many_pipes_concurrently(loop, pipes):
    """50 write->read pipe pairs on one loop at once, each payload intact."""

    async def pair(i):
        r, w = pipes()
        data = payload(128 * KiB + i, seed=100 + i)
        _, rpr = await loop.connect_read_pipe(lambda: Recorder(loop), r)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        wtr.write(data)
        wtr.close()
        await asyncio.gather(wpr.done, rpr.done)
        return digest(rpr.data) == digest(data), rpr.lost, wpr.lost

    async def main():
        return await asyncio.gather(*(pair(i) for i in range(50)))

    results = run(loop, main(), timeout=40)
    assert results == [(True, [None], [None])] * 50


def test_write_buffer_limits(loop, pipes):
    r, w = pipes()

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        assert tr.get_write_buffer_limits() == (16 * KiB, 64 * KiB)  # asyncio's defaults
        assert tr.get_write_buffer_size() == 0
        tr.set_write_buffer_limits(high=100 * KiB)
        assert tr.get_write_buffer_limits() == (25 * KiB, 100 * KiB)
        tr.set_write_buffer_limits(low=10 * KiB)
        assert tr.get_write_buffer_limits() == (10 * KiB, 40 * KiB)
        tr.set_write_buffer_limits(high=2 * MiB, low=KiB)
        assert tr.get_write_buffer_limits() == (KiB, 2 * MiB)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=KiB, low=2 * KiB)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=-1)
        # Nothing read: the pipe takes its capacity, the rest is buffered, below high.
        cap = pipe_capacity(w)
        tr.write(payload(cap + MiB))
        assert tr.get_write_buffer_size() == MiB
        assert pr.events == ["made"]
        # Lowering the high-water mark below what is buffered pauses at once.
        tr.set_write_buffer_limits(high=512 * KiB)
        assert pr.events == ["made", "pause"] and pr.sizes == [MiB]
        tr.abort()
        await pr.done

    run(loop, main())


@pytest.mark.parametrize("limits", [None, (32 * KiB, 256 * KiB)], ids=["default", "custom"])
def test_write_flow_control_slow_reader(loop, pipes, limits):
    """pause_writing once the buffer passes high; resume_writing after the reader drains it."""
    r, w = pipes()
    data = payload(2 * MiB, seed=5)

    async def main():
        rtr, rpr = await loop.connect_read_pipe(lambda: PausedRecorder(loop), r)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        if limits:
            wtr.set_write_buffer_limits(low=limits[0], high=limits[1])
        low, high = wtr.get_write_buffer_limits()
        assert (low, high) == (limits or (16 * KiB, 64 * KiB))
        cap = pipe_capacity(w)
        wtr.write(data[:MiB])
        assert wtr.get_write_buffer_size() == MiB - cap
        assert wpr.events == ["made", "pause"] and wpr.sizes == [MiB - cap]
        wtr.write(data[MiB:])  # still accepted (buffered) while paused
        assert wtr.get_write_buffer_size() == len(data) - cap
        await ticks()
        assert wpr.events == ["made", "pause"]  # the reader is still paused
        rtr.resume_reading()
        await wpr.resumed
        assert wpr.events == ["made", "pause", "resume"]
        assert wpr.sizes[1] <= low
        wtr.close()
        await wpr.done
        await rpr.done
        return rpr, wpr

    rpr, wpr = run(loop, main(), timeout=40)
    assert digest(rpr.data) == digest(data)
    assert wpr.events == ["made", "pause", "resume", "lost"] and wpr.lost == [None]


@pytest.mark.parametrize("how", ["close", "write_eof"])
def test_close_flushes_then_connection_lost(loop, pipes, how):
    """close()/write_eof() with data buffered: no loss until the buffer is flushed."""
    r, w = pipes()
    data = payload(MiB, seed=6)

    async def main():
        rtr, rpr = await loop.connect_read_pipe(lambda: PausedRecorder(loop), r)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        wtr.write(data)
        pending = wtr.get_write_buffer_size()
        assert pending > 0
        getattr(wtr, how)()
        assert wtr.is_closing()
        wtr.write(b"after close")  # dropped
        wtr.close()  # repeated: harmless
        wtr.write_eof()
        await ticks()
        assert not wpr.done.done() and wtr.get_write_buffer_size() == pending
        rtr.resume_reading()
        await wpr.done
        await rpr.done
        return rpr, wpr

    rpr, wpr = run(loop, main())
    assert bytes(rpr.data) == data
    assert rpr.events[-2:] == ["eof", "lost"]
    assert wpr.lost == [None] and w.closed


def test_abort_drops_buffered_data(loop, pipes, handler_calls):
    r, w = pipes()
    data = payload(MiB, seed=7)

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        tr.write(data)
        buffered = tr.get_write_buffer_size()
        assert 0 < buffered < len(data)
        tr.abort()
        assert tr.is_closing() and tr.get_write_buffer_size() == 0
        tr.write(b"after abort")  # dropped
        exc = await pr.done
        return exc, pr, buffered

    exc, pr, buffered = run(loop, main())
    assert exc is None
    assert pr.events == ["made", "pause", "lost"]  # no resume_writing on abort
    assert w.closed
    got = []
    read_to_eof(r, got)  # the write end is closed: EOF after what reached the pipe
    assert got == [data[: len(data) - buffered]]
    assert handler_calls == []


@pytest.mark.parametrize("buffered", [False, True], ids=["idle", "buffered"])
def test_write_pipe_notices_reader_gone(loop, pipes, handler_calls, buffered):
    """Closing the read end loses the write pipe: None when idle, BrokenPipeError with data
    pending (asyncio's behaviour); an OSError is not reported to the exception handler."""
    r, w = pipes()

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        if buffered:
            tr.write(payload(MiB))
            assert tr.get_write_buffer_size() > 0
        await ticks(2)
        assert not pr.done.done()
        r.close()
        exc = await pr.done
        tr.write(b"after loss")  # silently dropped, no exception
        await ticks(2)
        return tr, pr, exc

    tr, pr, exc = run(loop, main())
    if buffered:
        assert isinstance(exc, BrokenPipeError)
    else:
        assert exc is None
    assert pr.events[-1] == "lost" and pr.events.count("lost") == 1
    assert tr.is_closing() and tr.get_write_buffer_size() == 0
    assert w.closed
    assert handler_calls == []


# ------------------------------------------------------------------------------ bad input


def test_regular_file_rejected(loop, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"not a pipe")

    async def main():
        with open(path, "rb", buffering=0) as f:
            with pytest.raises(ValueError, match=r"^Pipe transport is for pipes/sockets only\.$"):
                await loop.connect_read_pipe(lambda: Recorder(loop), f)
            assert not f.closed and os.get_blocking(f.fileno())
        with open(path, "ab", buffering=0) as f:
            with pytest.raises(
                ValueError,
                match=r"^Pipe transport is only for pipes, sockets and character devices$",
            ):
                await loop.connect_write_pipe(lambda: WriteRecorder(loop), f)
            assert not f.closed and os.get_blocking(f.fileno())

    run(loop, main())
    assert path.read_bytes() == b"not a pipe"


def test_closed_fd_rejected(loop, pipes):
    class ClosedFd:
        """A pipe-like object whose fd is closed."""

        def __init__(self):
            r, w = os.pipe()
            os.close(r)
            os.close(w)
            self.fd = r

        def fileno(self):
            return self.fd

        def close(self):
            pass

    async def main():
        with warnings.catch_warnings():
            # The half-built transport warns it was not closed when collected.
            warnings.simplefilter("ignore", ResourceWarning)
            with pytest.raises(OSError) as info:
                await loop.connect_read_pipe(lambda: Recorder(loop), ClosedFd())
            assert info.value.errno == errno.EBADF
            with pytest.raises(OSError) as info:
                await loop.connect_write_pipe(lambda: WriteRecorder(loop), ClosedFd())
            assert info.value.errno == errno.EBADF
            del info
            gc.collect()

        r, w = pipes()
        r.close()
        unraisable = []
        hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
        try:
            # asyncio's half-built transport fails in __del__ too: not what is tested.
            with pytest.raises(ValueError, match="closed file"):
                await loop.connect_read_pipe(lambda: Recorder(loop), r)
            gc.collect()
        finally:
            sys.unraisablehook = hook

        # The loop is still fine.
        r, w = pipes()
        tr, pr = await loop.connect_read_pipe(lambda: Recorder(loop), r)
        w.write(b"ok")
        w.close()
        await pr.done
        return pr

    pr = run(loop, main())
    assert bytes(pr.data) == b"ok"


# -------------------------------------------------------------------------------- streams


def test_streams_over_pipes(loop, pipes):
    """StreamReader on a read pipe, StreamWriter with drain() on a write pipe, same loop."""
    r, w = pipes()
    body = payload(4 * MiB, seed=8)
    chunk = 4 * pipe_capacity(w)  # each write leaves more than high buffered

    async def main():
        reader = asyncio.StreamReader(limit=64 * KiB)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), r)
        wtr, wpr = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), w
        )
        writer = asyncio.StreamWriter(wtr, wpr, None, loop)
        assert writer.transport is wtr and writer.can_write_eof()
        high = wtr.get_write_buffer_limits()[1]

        async def produce():
            writer.write(b"header one\nheader two\n\n")
            peaks = []
            for i in range(0, len(body), chunk):
                writer.write(body[i : i + chunk])
                peaks.append(wtr.get_write_buffer_size())
                await writer.drain()
                assert wtr.get_write_buffer_size() <= high
            writer.write_eof()
            return peaks

        async def consume():
            lines = [await reader.readline(), await reader.readuntil(b"\n\n")]
            h = hashlib.sha256()
            n = 0
            while n < len(body):
                part = await reader.read(100 * KiB)
                assert part
                h.update(part)
                n += len(part)
            tail = await reader.read()
            return lines, h.hexdigest(), n, tail, reader.at_eof()

        peaks, got = await asyncio.gather(produce(), consume())
        writer.close()
        await writer.wait_closed()
        return peaks, got, high

    peaks, (lines, got_digest, n, tail, at_eof), high = run(loop, main(), timeout=40)
    assert lines == [b"header one\n", b"header two\n\n"]
    assert n == len(body) and got_digest == digest(body)
    assert tail == b"" and at_eof
    assert max(peaks) > high  # drain() really had to wait


def test_stream_drain_after_reader_gone(loop, pipes):
    """drain() waiting on a full buffer fails with BrokenPipeError when the reader goes."""
    r, w = pipes()

    async def main():
        wtr, wpr = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), w
        )
        writer = asyncio.StreamWriter(wtr, wpr, None, loop)
        writer.write(payload(MiB))
        r.close()
        with pytest.raises(BrokenPipeError):
            await writer.drain()
        assert wtr.is_closing()
        writer.close()
        with pytest.raises(BrokenPipeError):  # the close waiter carries the loss too
            await writer.wait_closed()

    run(loop, main())


# --------------------------------------------------------------------- resources and leaks


@pytest.mark.parametrize("side", ["read", "write"])
def test_unclosed_transport_resource_warning(loop, pipes, side):
    r, w = pipes()
    mine = r if side == "read" else w

    async def main():
        connect = loop.connect_read_pipe if side == "read" else loop.connect_write_pipe
        return await connect(lambda: Recorder(loop), mine)

    tr, pr = run(loop, main())
    loop.close()  # drops the loop's references (fd callbacks) to the transport
    assert not mine.closed
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del tr, pr
        for _ in range(3):
            gc.collect()
    assert mine.closed  # __del__ closes the pipe


def test_no_fd_leaks(loop, pipes, tmp_path):
    """Transfers, closes, aborts, losses and failures leave no descriptor behind."""
    data = payload(256 * KiB, seed=9)

    async def cycle(i):
        r, w = pipes()
        rtr, rpr = await loop.connect_read_pipe(lambda: Recorder(loop), r)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteRecorder(loop), w)
        wtr.write(data)
        if i % 3 == 0:
            wtr.close()
        elif i % 3 == 1:
            wtr.abort()
        else:
            rtr.close()  # the reader goes away first
        await wpr.done
        await rpr.done

        master, slave = os.openpty()
        m = open(master, "rb", buffering=0)
        tr, pr = await loop.connect_read_pipe(lambda: Recorder(loop), m)
        os.write(slave, b"x")
        await pr.wait_bytes(1)
        os.close(slave)
        await pr.done

        path = tmp_path / "regular"
        path.write_bytes(b"")
        with open(path, "rb") as f:
            with pytest.raises(ValueError):
                await loop.connect_read_pipe(lambda: Recorder(loop), f)

    async def main():
        for i in range(12):
            await cycle(i)

    run(loop, main())  # warm-up (lazy imports, the loop's own descriptors)
    settle_fds()
    before = fd_count()
    run(loop, main())
    settle_fds()
    assert fd_count() == before


def test_pipe_transport_callbacks_are_named_as_asyncio_names_them(loop, pipes, caplog):
    """A slow resume_writing() in debug mode is logged with the handle of the transport's
    _write_ready, named (and located) as asyncio's own method."""
    import logging
    import time

    r, w = pipes()

    class Slow(asyncio.Protocol):
        def __init__(self):
            self.resumed = loop.create_future()

        def pause_writing(self):
            pass

        def resume_writing(self):
            time.sleep(0.06)
            self.resumed.set_result(None)

    async def main():
        wtr, wpr = await loop.connect_write_pipe(Slow, w)
        wtr.write(b"x" * (pipe_capacity(w) + 100 * KiB))
        while not wpr.resumed.done():
            await asyncio.sleep(0.001)
            try:
                os.read(r.fileno(), 1 << 20)
            except BlockingIOError:
                pass
        wtr.close()
        await asyncio.sleep(0)

    os.set_blocking(r.fileno(), False)
    loop.set_debug(True)
    loop.slow_callback_duration = 0.04
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run(loop, main())
    slow = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executing")]
    assert len(slow) == 1, slow
    # Cancelled: the buffer drained, the writer was removed.
    # No source location after the call (as for asyncio's bound method), only where the handle
    # was created.
    head = r"Executing <Handle cancelled _UnixWritePipeTransport\._write_ready\(\)"
    assert re.fullmatch(head + r"( created at [^>]+)?> took \d+\.\d{3} seconds", slow[0]), slow
