"""Writes batched per loop iteration: what a stream transport's callers can see of it.

ferroloop keeps the small writes that the loop's callbacks make to a stream transport and sends
them together when the iteration's callbacks are done (src/transport.rs, ``BATCH_LIMIT``). Every
promise of asyncio's transports must hold through it: the order of the bytes, close() flushing,
abort() and write_eof() after such writes, errors, flow control. Each test runs on both loops;
the one assertion that differs is how many TCP segments leave.
"""

import asyncio
import socket
import struct

import pytest
from net_helpers import KiB, Recorder, payload, run

pytestmark = pytest.mark.timeout(60)


async def unix_pair(loop, protocol=Recorder):
    """(transport, protocol, peer socket): a transport over one end of a socketpair, whose
    other end the test reads directly (Unix sockets deliver at send time)."""
    a, b = socket.socketpair()
    b.setblocking(False)
    tr, pr = await loop.connect_accepted_socket(lambda: protocol(loop), a)
    await pr.made
    return tr, pr, b


def drain(peer) -> bytes:
    """Everything the peer has received so far, without waiting."""
    out = bytearray()
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def data_segments_out(sock) -> int:
    """tcp_info.tcpi_data_segs_out (Linux 4.6+): data segments this socket has sent."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, 156)[0]


def test_writes_of_an_iteration_arrive_by_the_next(loop):
    """A write made by a callback is on the wire before the next iteration's callbacks run:
    batching adds no latency past the iteration's end."""

    async def main():
        tr, pr, peer = await unix_pair(loop)
        seen = loop.create_future()

        def writer():
            tr.write(b"head ")
            tr.write(b"body")
            loop.call_soon(lambda: seen.set_result(drain(peer)))

        loop.call_soon(writer)
        got = await seen
        tr.close()
        await pr.done
        peer.close()
        return got

    assert run(loop, main()) == b"head body"


def test_interleaved_writes_from_several_callbacks_keep_order(loop):
    """Small and large writes to three transports from callbacks, tasks and protocol callbacks
    of the same iterations: each peer gets its own bytes, in order."""

    async def main():
        pairs = [await unix_pair(loop) for _ in range(3)]
        expected = [bytearray() for _ in pairs]
        sizes = [1, 7, 100, 5 * KiB, 15 * KiB, 17 * KiB, 64 * KiB, 200 * KiB, 3]

        def write(i, n, seed):
            data = payload(n, seed)
            pairs[i][0].write(data)
            expected[i].extend(data)

        seed = 0
        for _round in range(4):
            for n in sizes:
                for i in range(3):
                    seed += 1
                    loop.call_soon(write, i, n, seed)
            await asyncio.sleep(0)

            async def task(i, seed):
                for k, n in enumerate(reversed(sizes)):
                    write(i, n, seed * 100 + k)
                    if k % 3 == 0:
                        await asyncio.sleep(0)

            seed += 1
            await asyncio.gather(*(task(i, seed + i) for i in range(3)))
        received = [bytearray() for _ in pairs]

        async def reader(i):
            peer = pairs[i][2]
            while len(received[i]) < len(expected[i]):
                received[i] += await loop.sock_recv(peer, 1 << 20)

        await asyncio.gather(*(reader(i) for i in range(3)))
        for tr, pr, peer in pairs:
            tr.close()
            await pr.done
            peer.close()
        return received, expected

    received, expected = run(loop, main())
    for got, want in zip(received, expected, strict=True):
        assert len(got) == len(want)
        assert got == want


def test_close_after_batched_writes_flushes_then_loses_connection(loop):
    async def main():
        tr, pr, peer = await unix_pair(loop)
        done = loop.create_future()

        def writer():
            tr.write(b"one ")
            tr.write(b"two")
            tr.close()
            # asyncio's write() had sent the rest, so close() found the buffer empty: what is
            # written after it is dropped.
            tr.write(b" three")
            done.set_result((tr.is_closing(), list(pr.events)))

        loop.call_soon(writer)
        closing, events_after_close = await done
        await pr.done
        got = drain(peer)
        peer.close()
        return closing, events_after_close, pr.events, pr.lost, got

    closing, events_after_close, events, lost, got = run(loop, main())
    assert closing
    assert events_after_close == ["made"], "connection_lost must not run inside close()"
    assert events == ["made", "lost"]
    assert lost == [None]
    assert got == b"one two"


def test_abort_after_batched_write_sends_what_write_would_have(loop):
    """abort() drops what the kernel would not take; a small write just made is not that
    (asyncio's write() sent it at once)."""

    async def main():
        tr, pr, peer = await unix_pair(loop)
        done = loop.create_future()

        def writer():
            tr.write(b"last words")
            tr.abort()
            done.set_result(None)

        loop.call_soon(writer)
        await done
        await pr.done
        got = drain(peer)
        peer.close()
        return pr.lost, got

    lost, got = run(loop, main())
    assert lost == [None]
    assert got == b"last words"


def test_write_eof_after_batched_writes(loop):
    async def main():
        tr, pr, peer = await unix_pair(loop)
        peer.setblocking(True)
        peer.settimeout(10)

        def writer():
            tr.write(b"all ")
            tr.write(b"of it")
            tr.write_eof()
            with pytest.raises(RuntimeError, match="Cannot call write"):
                tr.write(b"more")

        loop.call_soon(writer)
        await asyncio.sleep(0)
        got = bytearray()
        while chunk := await loop.run_in_executor(None, peer.recv, 100):
            got += chunk
        # The write side only is shut: the transport still reads.
        peer.sendall(b"reply")
        await pr.wait_bytes(5)
        tr.close()
        await pr.done
        peer.close()
        return bytes(got), bytes(pr.data)

    assert run(loop, main()) == (b"all of it", b"reply")


def test_peer_reset_while_writes_are_batched(loop):
    """The peer resets the connection in the iteration that wrote to it: one connection_lost
    with the OSError, the error logged by neither loop's exception handler (an OSError)."""
    handled = []

    async def main():
        loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))
        server_side = loop.create_future()

        def factory():
            p = Recorder(loop)
            server_side.set_result(p)
            return p

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        tr, pr = await loop.create_connection(lambda: Recorder(loop), *listener.getsockname())
        peer, _ = listener.accept()
        listener.close()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        done = loop.create_future()

        def writer():
            tr.write(b"x" * 100)
            peer.close()  # RST
            tr.write(b"y" * 100)
            done.set_result(None)

        loop.call_soon(writer)
        await done
        await asyncio.wait_for(pr.done, 10)
        await asyncio.sleep(0.05)
        return pr.events, pr.lost

    events, lost = run(loop, main())
    assert events == ["made", "lost"]
    assert len(lost) == 1
    assert isinstance(lost[0], (ConnectionResetError, BrokenPipeError)), lost
    assert handled == []


def test_flow_control_with_batched_writes(loop):
    """Small writes past the high-water mark pause the protocol; reading the peer resumes it;
    every byte arrives in order."""

    class Flow(Recorder):
        def __init__(self, lp):
            super().__init__(lp)
            self.flow = []
            self.resumed = lp.create_future()

        def pause_writing(self):
            self.flow.append(("pause", self.transport.get_write_buffer_size()))

        def resume_writing(self):
            self.flow.append(("resume", self.transport.get_write_buffer_size()))
            if not self.resumed.done():
                self.resumed.set_result(None)

    async def main():
        tr, pr, peer = await unix_pair(loop, Flow)
        tr.set_write_buffer_limits(high=4 * KiB, low=KiB)
        sent = bytearray()
        seed = 0
        # Until the kernel's buffer is full and ours passes the high-water mark.
        while not pr.flow:
            for _ in range(16):
                seed += 1
                data = payload(512, seed)
                tr.write(data)
                sent += data
            await asyncio.sleep(0)
        paused_at = pr.flow[0]
        got = bytearray()
        while len(got) < len(sent):
            got += await loop.sock_recv(peer, 1 << 20)
        await pr.resumed
        tr.close()
        await pr.done
        peer.close()
        return paused_at, pr.flow, got, sent

    paused_at, flow, got, sent = run(loop, main())
    assert paused_at[0] == "pause" and paused_at[1] > 4 * KiB
    assert flow[1] == ("resume", 0) or (flow[1][0] == "resume" and flow[1][1] <= KiB)
    assert [kind for kind, _ in flow] == ["pause", "resume"]
    assert got == sent


def test_zero_high_water_sends_every_write_at_once(loop):
    """With a high-water mark of 0 nothing may wait in the transport: each write goes out in
    the call, as asyncio's does."""

    async def main():
        tr, pr, peer = await unix_pair(loop)
        tr.set_write_buffer_limits(high=0)
        done = loop.create_future()

        def writer():
            tr.write(b"now")
            done.set_result((tr.get_write_buffer_size(), drain(peer)))

        loop.call_soon(writer)
        result = await done
        tr.close()
        await pr.done
        peer.close()
        return result

    assert run(loop, main()) == (0, b"now")


def test_writes_outside_the_loop_go_out_at_once(loop):
    """A write made while the loop is not running (between run_until_complete calls) is sent
    in the call: no iteration may come to flush it."""
    tr, pr, peer = run(loop, unix_pair(loop))
    tr.write(b"between runs")
    assert tr.get_write_buffer_size() == 0
    assert drain(peer) == b"between runs"
    tr.close()
    run(loop, pr.done)
    peer.close()


def test_one_iterations_writes_leave_in_one_segment(loop, flavor):
    """Three writes from one callback to a TCP transport (TCP_NODELAY, as asyncio sets):
    ferroloop sends them as one segment; asyncio sends each at once. get_write_buffer_size()
    answers as asyncio's (the bytes are sent, not buffered) on both."""

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
        sock = tr.get_extra_info("socket")
        before = data_segments_out(sock)
        sizes = loop.create_future()

        def writer():
            tr.write(b"HTTP/1.1 200 OK\r\n\r\n")
            tr.write(b"hello, ")
            tr.write(b"world")
            sizes.set_result(tr.get_write_buffer_size())

        loop.call_soon(writer)
        buffered = await sizes
        await srv.wait_bytes(31)
        segments = data_segments_out(sock) - before
        tr.close()
        await pr.done
        server.close()
        await server.wait_closed()
        return buffered, segments, bytes(srv.data)

    buffered, segments, data = run(loop, main())
    assert data == b"HTTP/1.1 200 OK\r\n\r\nhello, world"
    assert buffered == 0
    if flavor.name == "ferroloop":
        assert segments == 1
    else:
        # The kernel may coalesce sends made while the first is still queued (autocorking).
        assert 1 <= segments <= 3


def test_resume_writing_that_writes_during_close(loop):
    """close() with bytes buffered, then resume_writing() (called from inside the transport's
    write-readiness handling) writes a last piece: asyncio sends it, then loses the
    connection. (TLS does this: its close_notify waits in the protocol while writing is
    paused.)"""

    class Last(Recorder):
        paused = False

        def pause_writing(self):
            self.paused = True

        def resume_writing(self):
            self.transport.write(b"END")

    async def main():
        tr, pr, peer = await unix_pair(loop, Last)
        tr.set_write_buffer_limits(high=4 * KiB)
        sent = bytearray()
        while not pr.paused:
            data = payload(1024, len(sent))
            tr.write(data)
            sent += data
            if len(sent) % (16 * KiB) == 0:
                await asyncio.sleep(0)
        tr.close()
        got = bytearray()
        while chunk := await loop.sock_recv(peer, 1 << 20):
            got += chunk
        await pr.done
        peer.close()
        return pr.lost, bytes(got), bytes(sent)

    lost, got, sent = run(loop, main())
    assert lost == [None]
    assert got == sent + b"END"
