"""Flow control on TCP transports: write-side pause/resume, buffer limits, read pausing."""

import asyncio
import socket
from fractions import Fraction

import pytest
from net_helpers import KiB, MiB, Recorder, close_server, digest, first_accepted, payload, run

pytestmark = pytest.mark.timeout(60)

TOTAL = 32 * MiB  # well beyond what loopback's kernel buffers absorb
CHUNK = 64 * KiB


class PausedReader(Recorder):
    """Server side that does not read until told to."""

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()


class FlowWriter(asyncio.Protocol):
    def __init__(self, loop):
        self.loop = loop
        self.paused = False
        self.events = []  # ("pause" | "resume", buffer size at that moment)
        self.resumed = None
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def pause_writing(self):
        assert not self.paused, "pause_writing twice in a row"
        self.paused = True
        self.events.append(("pause", self.transport.get_write_buffer_size()))
        self.resumed = self.loop.create_future()

    def resume_writing(self):
        assert self.paused, "resume_writing without pause_writing"
        self.paused = False
        self.events.append(("resume", self.transport.get_write_buffer_size()))
        self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.done.set_result(exc)


@pytest.mark.parametrize("limits", [None, (4 * KiB, 256 * KiB)], ids=["default", "custom"])
def test_pause_resume_writing_with_slow_reader(loop, limits):
    data = payload(TOTAL, seed=10)
    readers = []

    def reader_factory():
        p = PausedReader(loop)
        readers.append(p)
        return p

    async def main():
        server = await loop.create_server(reader_factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(lambda: FlowWriter(loop), "127.0.0.1", port)
        if limits is not None:
            tr.set_write_buffer_limits(high=limits[1], low=limits[0])
        low, high = tr.get_write_buffer_limits()
        assert tr.get_write_buffer_size() == 0
        max_size = 0
        paused_before_reader_resumed = False
        resumed_reader = False
        for off in range(0, TOTAL, CHUNK):
            if pr.paused:
                if not resumed_reader:
                    paused_before_reader_resumed = True
                    # The reader starts consuming only once the writer was paused.
                    loop.call_later(0.05, readers[0].transport.resume_reading)
                    resumed_reader = True
                await pr.resumed
            tr.write(data[off : off + CHUNK])
            max_size = max(max_size, tr.get_write_buffer_size())
        tr.write_eof()
        await readers[0].wait_bytes(TOTAL)
        tr.close()
        await pr.done
        await close_server(server)
        return low, high, max_size, paused_before_reader_resumed, pr, readers[0]

    low, high, max_size, paused_early, pr, reader = run(loop, main())
    if limits is not None:
        assert (low, high) == limits
    assert paused_early, "the writer was never paused although the reader was not reading"
    # Bounded: the writer never had much more than the high-water mark buffered.
    assert max_size <= high + CHUNK
    assert max_size < TOTAL // 4
    kinds = [k for k, _ in pr.events]
    assert kinds[0] == "pause"
    assert kinds == ["pause", "resume"] * (len(kinds) // 2)
    for kind, size in pr.events:
        if kind == "pause":
            assert size > high
        else:
            assert size <= low
    assert digest(reader.data) == digest(data)


def test_write_buffer_limits_values(loop):
    async def main():
        server = await loop.create_server(lambda: Recorder(loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        got = [tr.get_write_buffer_limits()]
        tr.set_write_buffer_limits(high=1000)
        got.append(tr.get_write_buffer_limits())
        tr.set_write_buffer_limits(low=100)
        got.append(tr.get_write_buffer_limits())
        tr.set_write_buffer_limits(high=10, low=5)
        got.append(tr.get_write_buffer_limits())
        tr.set_write_buffer_limits(high=7, low=7)
        got.append(tr.get_write_buffer_limits())
        tr.set_write_buffer_limits(high=0)
        got.append(tr.get_write_buffer_limits())
        tr.set_write_buffer_limits()
        got.append(tr.get_write_buffer_limits())
        errors = []
        for kw in ({"high": 10, "low": 20}, {"low": -1}, {"high": -4}):
            try:
                tr.set_write_buffer_limits(**kw)
            except ValueError:
                errors.append("ValueError")
            else:
                errors.append(None)
        after_errors = tr.get_write_buffer_limits()
        tr.close()
        await pr.done
        await close_server(server)
        return got, errors, after_errors

    got, errors, after_errors = run(loop, main())
    assert got == [
        (16 * KiB, 64 * KiB),
        (250, 1000),
        (100, 400),
        (5, 10),
        (7, 7),
        (0, 0),
        (16 * KiB, 64 * KiB),
    ]
    assert errors == ["ValueError"] * 3
    assert after_errors == (16 * KiB, 64 * KiB)


def test_lowering_high_water_pauses_immediately(loop):
    """set_write_buffer_limits re-checks the buffer: lowering `high` below it pauses at once."""

    async def main():
        factory, accepted = first_accepted(loop, lambda: PausedReader(loop))
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(lambda: FlowWriter(loop), "127.0.0.1", port)
        tr.set_write_buffer_limits(high=TOTAL * 2)
        tr.write(payload(TOTAL, seed=11))
        await asyncio.sleep(0.05)
        size = tr.get_write_buffer_size()
        before = list(pr.events)
        tr.set_write_buffer_limits(high=KiB)
        after = list(pr.events)
        tr.abort()
        await pr.done
        # The paused server side would never notice; from 3.12 wait_closed() waits for it.
        (await accepted).transport.abort()
        await close_server(server)
        return size, before, after

    size, before, after = run(loop, main())
    assert size > KiB
    assert before == []
    assert [k for k, _ in after] == ["pause"]


def test_stream_drain_applies_backpressure(loop):
    high = 64 * KiB
    data = payload(TOTAL, seed=12)
    got = bytearray()
    start_reading = asyncio.Event()

    async def handle(reader, writer):
        await start_reading.wait()
        while chunk := await reader.read(MiB):
            got.extend(chunk)
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.set_write_buffer_limits(high=high)
        over_high_before_drain = 0
        max_after_drain = 0
        for off in range(0, TOTAL, CHUNK):
            writer.write(data[off : off + CHUNK])
            if writer.transport.get_write_buffer_size() > high:
                over_high_before_drain += 1
                if not start_reading.is_set():
                    loop.call_later(0.05, start_reading.set)
            await writer.drain()
            max_after_drain = max(max_after_drain, writer.transport.get_write_buffer_size())
        writer.write_eof()
        await reader.read()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return over_high_before_drain, max_after_drain

    over, max_after = run(loop, main())
    assert over >= 1
    assert max_after <= high
    assert len(got) == TOTAL and digest(got) == digest(data)


def test_pause_reading_resume_reading(loop):
    async def main():
        server_side = loop.create_future()

        def factory():
            p = Recorder(loop)
            server_side.set_result(p)
            return p

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        srv = await server_side
        await srv.made
        states = [tr.is_reading()]
        tr.pause_reading()
        states.append(tr.is_reading())
        tr.pause_reading()  # idempotent
        states.append(tr.is_reading())
        srv.transport.write(b"while paused")
        await asyncio.sleep(0.1)
        got_while_paused = bytes(pr.data)
        tr.resume_reading()
        states.append(tr.is_reading())
        tr.resume_reading()  # idempotent
        await pr.wait_bytes(len(b"while paused"))
        got_after = bytes(pr.data)
        tr.close()
        states.append(tr.is_reading())
        await pr.done
        await close_server(server)
        return states, got_while_paused, got_after

    states, paused_data, after = run(loop, main())
    assert states == [True, False, False, True, False]
    assert paused_data == b""
    assert after == b"while paused"


def test_pause_reading_applies_to_eof(loop):
    """EOF from the peer is not delivered while reading is paused."""

    async def main():
        server_side = loop.create_future()

        def factory():
            p = Recorder(loop)
            server_side.set_result(p)
            return p

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        srv = await server_side
        tr.pause_reading()
        srv.transport.write(b"bye")
        srv.transport.close()
        await asyncio.sleep(0.1)
        events_paused = list(pr.events)
        tr.resume_reading()
        await pr.done
        await close_server(server)
        return events_paused, pr

    events_paused, pr = run(loop, main())
    assert events_paused == ["made"]
    assert pr.events == ["made", "data", "eof", "lost"]
    assert bytes(pr.data) == b"bye"
    assert pr.lost == [None]


class _Idx:
    """An object with only __index__: no arithmetic, no comparisons."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


_INF, _NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    ("high", "low", "expected"),
    [
        (1.5, None, (0.0, 1.5)),
        (10**400, None, (10**400 // 4, 10**400)),
        (None, 1.5, (1.5, 6.0)),
        (Fraction(3, 2), None, (0, Fraction(3, 2))),
        (True, None, (0, True)),
        (8, 1.5, (1.5, 8)),
        (_INF, None, (ValueError, "high (inf) must be >= low (nan) must be >= 0")),
        (-_INF, None, (ValueError, "high (-inf) must be >= low (nan) must be >= 0")),
        (_NAN, None, (ValueError, "high (nan) must be >= low (nan) must be >= 0")),
        (-1, None, (ValueError, "high (-1) must be >= low (-1) must be >= 0")),
        (_Idx(8), None, (TypeError, "unsupported operand type(s) for //: '_Idx' and 'int'")),
        (None, _Idx(2), (TypeError, "unsupported operand type(s) for *: 'int' and '_Idx'")),
        (
            _Idx(8),
            _Idx(2),
            (TypeError, "'>=' not supported between instances of '_Idx' and '_Idx'"),
        ),
        (len, None, (TypeError, "for //: 'builtin_function_or_method' and 'int'")),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_write_buffer_limits_are_computed_with_the_objects_given(loop, high, low, expected):
    """asyncio's _set_write_buffer_limits computes with the limits as they are: `4 * low`,
    `high // 4`, `high >= low >= 0`, with Python's results and exceptions."""
    a, b = socket.socketpair()
    try:
        tr, _ = run(loop, loop.connect_accepted_socket(asyncio.Protocol, a))
        before = tr.get_write_buffer_limits()
        if isinstance(expected[0], type):
            with pytest.raises(expected[0]) as info:
                tr.set_write_buffer_limits(high, low)
            assert expected[1] in str(info.value)
            assert tr.get_write_buffer_limits() == before
        else:
            tr.set_write_buffer_limits(high, low)
            got = tr.get_write_buffer_limits()
            assert got == expected
            assert [type(v) for v in got] == [type(v) for v in expected]
        tr.close()
        run(loop, asyncio.sleep(0))
    finally:
        b.close()


@pytest.mark.parametrize(
    ("high", "low", "events"),
    [
        (1.5, 0.5, ["pause", "resume"]),
        (Fraction(3, 2), Fraction(1, 2), ["pause", "resume"]),
        (10**400, 10**399, []),
    ],
    ids=["float", "fraction", "huge"],
)
def test_flow_control_compares_the_buffer_with_the_limits_given(loop, high, low, events):
    a, b = socket.socketpair()
    b.setblocking(False)

    class Flow(asyncio.Protocol):
        def __init__(self):
            self.events = []

        def pause_writing(self):
            self.events.append("pause")

        def resume_writing(self):
            self.events.append("resume")

    async def main():
        tr, pr = await loop.connect_accepted_socket(Flow, a)
        tr.set_write_buffer_limits(high, low)
        tr.write(b"x" * (8 * MiB))  # more than the kernel takes at once
        assert tr.get_write_buffer_size() > 0
        got = 0
        while got < 8 * MiB:
            await asyncio.sleep(0.001)
            try:
                got += len(b.recv(1 << 20))
            except BlockingIOError:
                pass
        for _ in range(5):
            await asyncio.sleep(0)
        assert tr.get_write_buffer_size() == 0
        tr.close()
        await asyncio.sleep(0)
        return pr.events

    try:
        assert run(loop, main()) == events
    finally:
        b.close()
