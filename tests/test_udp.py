"""UDP and Unix datagram sockets: create_datagram_endpoint, the datagram transport, and the
sock_recvfrom / sock_recvfrom_into / sock_sendto coroutines.

Endpoint flavours (local_addr, remote_addr, both, IPv6, sock=, reuse_port, allow_broadcast,
AF_UNIX with paths, stale paths and the abstract namespace) and the argument errors asyncio
raises; the protocol callbacks and their order; the transport (payload types, buffering and
flow control on a full Unix datagram queue, extra info, close/abort, sendto after close compared
with a stock asyncio loop run in the same test); datagram boundaries and order; echo round
trips; the sock_* coroutines (waiting, cancellation, debug-mode checks); and fd leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import sys
from asyncio import selector_events

import pytest
from net_helpers import (
    DatagramEcho,
    KiB,
    abstract_name,
    fd_count,
    on_reference_loop,
    payload,
    require_ipv6,
    run,
    settle_fds,
)

pytestmark = pytest.mark.timeout(60)

LOCAL = ("127.0.0.1", 0)
# What one buffered 500-byte datagram adds to get_write_buffer_size(): asyncio counts an
# 8-byte header per datagram since 3.13.
DATAGRAM_COST = 500 + (8 if sys.version_info >= (3, 13) else 0)


# -- helpers ------------------------------------------------------------------------------------


class Datagrams(asyncio.DatagramProtocol):
    """A DatagramProtocol that records every callback.

    ``events`` is the callback order (names); ``received`` the (data, addr) pairs; ``errors``
    what error_received got; ``lost`` the arguments of connection_lost. Futures ``made`` and
    ``done`` resolve on connection_made and connection_lost; ``until(pred)`` waits for a state.
    """

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.events: list[str] = []
        self.received: list[tuple[bytes, object]] = []
        self.errors: list[Exception] = []
        self.lost: list[BaseException | None] = []
        self.made = loop.create_future()
        self.done = loop.create_future()
        self._changed = None

    @property
    def data(self) -> list[bytes]:
        return [d for d, _ in self.received]

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def datagram_received(self, data, addr):
        assert isinstance(data, bytes), type(data)
        self.events.append("data")
        self.received.append((data, addr))
        self._wake()

    def error_received(self, exc):
        self.events.append("error")
        self.errors.append(exc)
        self._wake()

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.append(exc)
        self.done.set_result(exc)
        self._wake()

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")
        self._wake()

    def _wake(self):
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    async def until(self, predicate):
        while not predicate():
            self._changed = self.loop.create_future()
            await self._changed

    async def wait_count(self, n: int):
        await self.until(lambda: len(self.received) >= n)


async def endpoint(loop, protocol=None, **kw):
    """create_datagram_endpoint with a recording protocol: (transport, protocol)."""
    return await loop.create_datagram_endpoint(protocol or (lambda: Datagrams(loop)), **kw)


def udp_socket(family=socket.AF_INET, host="127.0.0.1", *, blocking=False):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(blocking)
    return s


def unix_dgram_socket(path=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if path is not None:
        s.bind(path)
    s.setblocking(False)
    return s


def closed_udp_port() -> int:
    """A 127.0.0.1 UDP port with nothing bound to it (bound briefly, then released)."""
    with udp_socket() as s:
        return s.getsockname()[1]


def drain(sock) -> list[bytes]:
    """Everything already queued on a non-blocking datagram socket."""
    got = []
    while True:
        try:
            got.append(sock.recv(256 * KiB))
        except BlockingIOError:
            return got


def raise_rcvbuf(sock, want: int = 4 * 1024 * KiB) -> None:
    """Make room for a burst of datagrams (UDP drops what does not fit in the receive buffer)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < 1024 * KiB:
        pytest.skip("cannot raise SO_RCVBUF to 1 MiB (net.core.rmem_max too low)")


async def eventually(predicate):
    """Wait for a condition that involves several protocols (polls; bounded by run()'s timeout)."""
    while not predicate():
        await asyncio.sleep(0.01)


@contextlib.contextmanager
def asyncio_log():
    """Collect the messages of the ``asyncio`` logger at WARNING and above."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = logging.getLogger("asyncio")
    handler = Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


async def fill_unix_queue(loop, tmp_path, n: int, size: int = 500):
    """A connected AF_UNIX endpoint whose peer never reads, and ``n`` datagrams sent to it.

    Only ~max_dgram_qlen datagrams fit in the peer's queue; the rest stay in the transport's
    buffer. Returns (receiver socket, transport, protocol, what was sent). Every payload is a
    bytearray overwritten right after sendto(): the buffered copy must not change.
    """
    path = str(tmp_path / "r")
    receiver = unix_dgram_socket(path)
    tr, pr = await endpoint(loop, family=socket.AF_UNIX, remote_addr=path)
    tr.set_write_buffer_limits(high=4 * size)
    sent = []
    for i in range(n):
        data = bytearray(payload(size, seed=i))
        tr.sendto(data)
        sent.append(bytes(data))
        data[:] = bytes(size)
    return receiver, tr, pr, sent


# -- create_datagram_endpoint: addresses --------------------------------------------------------


def test_local_addr_receives_and_replies(loop):
    async def main():
        tr, pr = await endpoint(loop, local_addr=LOCAL)
        events_at_return = list(pr.events)
        addr = tr.get_extra_info("sockname")
        with udp_socket() as peer:
            peer.sendto(b"hello", addr)
            await pr.wait_count(1)
            tr.sendto(b"reply", pr.received[0][1])
            reply = await loop.sock_recvfrom(peer, 100)
            peer_addr = peer.getsockname()
        tr.close()
        await pr.done
        return tr, pr, addr, peer_addr, reply, events_at_return

    tr, pr, addr, peer_addr, reply, events_at_return = run(loop, main())
    assert events_at_return == ["made"]  # connection_made ran before the endpoint returned
    assert addr[0] == "127.0.0.1" and addr[1] != 0
    assert pr.received == [(b"hello", peer_addr)]
    assert reply == (b"reply", addr)
    assert tr.get_extra_info("peername") is None
    assert pr.events == ["made", "data", "lost"] and pr.lost == [None]


def test_remote_addr_connects(loop):
    """remote_addr connects the socket: sendto() needs no address, another one is refused,
    and the kernel delivers datagrams from the peer only."""

    async def main():
        srv_tr, srv = await endpoint(loop, local_addr=LOCAL)
        srv_addr = srv_tr.get_extra_info("sockname")
        tr, pr = await endpoint(loop, remote_addr=srv_addr)
        tr.sendto(b"one")
        tr.sendto(b"two", srv_addr)  # the connected address itself is accepted
        with pytest.raises(ValueError, match="Invalid address"):
            tr.sendto(b"three", ("127.0.0.1", closed_udp_port()))
        await srv.wait_count(2)
        client_addr = srv.received[0][1]
        with udp_socket() as stranger:
            stranger.sendto(b"from a stranger", client_addr)
            srv_tr.sendto(b"from the peer", client_addr)
            await pr.wait_count(1)
            await asyncio.sleep(0.05)
        tr.close()
        srv_tr.close()
        await pr.done
        await srv.done
        return tr, srv_addr, client_addr, pr, srv

    tr, srv_addr, client_addr, pr, srv = run(loop, main())
    assert srv.data == [b"one", b"two"]
    assert tr.get_extra_info("peername") == srv_addr
    assert tr.get_extra_info("sockname") == client_addr
    assert pr.received == [(b"from the peer", srv_addr)]


def test_local_and_remote_addr(loop):
    async def main():
        srv_tr, srv = await endpoint(loop, local_addr=LOCAL)
        srv_addr = srv_tr.get_extra_info("sockname")
        port = closed_udp_port()
        tr, pr = await endpoint(loop, local_addr=("127.0.0.1", port), remote_addr=srv_addr)
        tr.sendto(b"ping")
        await srv.wait_count(1)
        srv_tr.sendto(b"pong", srv.received[0][1])
        await pr.wait_count(1)
        info = tr.get_extra_info("sockname"), tr.get_extra_info("peername")
        tr.close()
        srv_tr.close()
        await pr.done
        return port, srv_addr, info, srv.received, pr.received

    port, srv_addr, info, srv_received, received = run(loop, main())
    assert info == (("127.0.0.1", port), srv_addr)
    assert srv_received == [(b"ping", ("127.0.0.1", port))]
    assert received == [(b"pong", srv_addr)]


def test_ipv6(loop):
    require_ipv6()

    async def main():
        srv_tr, srv = await endpoint(loop, family=socket.AF_INET6, local_addr=("::1", 0))
        srv_addr = srv_tr.get_extra_info("sockname")
        tr, pr = await endpoint(loop, family=socket.AF_INET6, remote_addr=srv_addr[:2])
        tr.sendto(b"over v6")
        await srv.wait_count(1)
        srv_tr.sendto(b"back", srv.received[0][1])
        await pr.wait_count(1)
        families = srv_tr.get_extra_info("socket").family, tr.get_extra_info("socket").family
        tr.close()
        srv_tr.close()
        await srv.done
        return srv_addr, families, srv.received, pr.received, tr.get_extra_info("sockname")

    srv_addr, families, srv_received, received, client_addr = run(loop, main())
    assert families == (socket.AF_INET6, socket.AF_INET6)
    assert srv_addr[0] == "::1" and len(srv_addr) == 4
    assert srv_received == [(b"over v6", client_addr)]
    assert received == [(b"back", srv_addr)]


def test_family_without_addresses_makes_an_unbound_socket(loop):
    async def main():
        tr, pr = await endpoint(loop, family=socket.AF_INET)
        before = tr.get_extra_info("sockname")
        with udp_socket() as peer:
            tr.sendto(b"autobind", peer.getsockname())
            data, addr = await loop.sock_recvfrom(peer, 100)
        tr.close()
        await pr.done
        return before, data, addr

    before, data, addr = run(loop, main())
    assert before == ("0.0.0.0", 0)
    assert data == b"autobind" and addr[1] != 0


# -- create_datagram_endpoint: sock= and socket options ------------------------------------------


@pytest.mark.parametrize("blocking", [False, True], ids=["nonblocking", "blocking"])
def test_sock_premade(loop, blocking):
    async def main():
        sock = udp_socket(blocking=blocking)
        tr, pr = await endpoint(loop, sock=sock)
        addr = sock.getsockname()
        with udp_socket() as peer:
            peer.sendto(b"to a premade socket", addr)
            await pr.wait_count(1)
            tr.sendto(b"from it", peer.getsockname())
            reply = await loop.sock_recvfrom(peer, 100)
        info = (
            sock.getblocking(),
            tr.get_extra_info("socket").fileno() == sock.fileno(),
            tr.get_extra_info("sockname") == addr,
            tr.get_extra_info("peername"),
        )
        tr.close()
        await pr.done
        return sock, info, pr.data, reply

    sock, info, data, reply = run(loop, main())
    assert info == (False, True, True, None)
    assert data == [b"to a premade socket"] and reply[0] == b"from it"
    assert sock.fileno() == -1  # the transport closed the socket it was given


def test_sock_premade_connected(loop):
    async def main():
        with udp_socket() as peer:
            sock = udp_socket()
            sock.connect(peer.getsockname())
            sock_addr = sock.getsockname()
            tr, pr = await endpoint(loop, sock=sock)
            tr.sendto(b"no address needed")
            data = await loop.sock_recvfrom(peer, 100)
            peername = tr.get_extra_info("peername")
            tr.close()
            await pr.done
            return peer.getsockname(), peername, data, sock_addr

    peer_addr, peername, (data, addr), sock_addr = run(loop, main())
    assert peername == peer_addr
    assert data == b"no address needed" and addr == sock_addr


@pytest.mark.parametrize(
    "kwargs",
    [
        {"local_addr": LOCAL},
        {"remote_addr": ("127.0.0.1", 9)},
        {"family": socket.AF_INET},
        {"proto": socket.IPPROTO_UDP},
        {"flags": socket.AI_PASSIVE},
        {"reuse_port": True},
        {"allow_broadcast": True},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_sock_with_socket_modifiers_is_refused(loop, kwargs):
    name = next(iter(kwargs))

    async def main():
        with udp_socket() as sock:
            with pytest.raises(ValueError, match=f"can not be used when sock is specified.*{name}"):
                await endpoint(loop, sock=sock, **kwargs)
            assert sock.fileno() != -1  # left to its owner, as asyncio does

    run(loop, main())


def test_sock_stream_socket_is_refused(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # The wording changed in 3.13.
            with pytest.raises(ValueError, match="A (UDP|datagram) [Ss]ocket was expected"):
                await endpoint(loop, sock=sock)

    run(loop, main())


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({}, ValueError, "unexpected address family"),
        ({"local_addr": "127.0.0.1"}, TypeError, "2-tuple is expected"),
        ({"remote_addr": ("127.0.0.1", 1, 2)}, TypeError, "2-tuple is expected"),
        ({"family": socket.AF_UNIX, "local_addr": ("a", 1)}, TypeError, "string is expected"),
    ],
    ids=["no-address-no-family", "local-not-tuple", "remote-3-tuple", "unix-tuple"],
)
def test_address_argument_errors(loop, kwargs, exc, match):
    async def main():
        with pytest.raises(exc, match=match):
            await endpoint(loop, **kwargs)

    run(loop, main())


def test_reuse_address_like_stock_loop(loop):
    """asyncio removed reuse_address (3.11: TypeError); whatever it does, we do."""

    async def attempt(lp):
        try:
            tr, _ = await endpoint(lp, local_addr=LOCAL, reuse_address=True)
        except Exception as exc:
            return type(exc), str(exc)
        tr.close()
        return None

    expected = on_reference_loop(attempt)
    assert expected is not None  # asyncio refuses it on every version we support
    assert run(loop, attempt(loop)) == expected


def test_reuse_port(loop):
    async def main():
        tr1, pr1 = await endpoint(loop, local_addr=LOCAL, reuse_port=True)
        addr = tr1.get_extra_info("sockname")
        tr2, pr2 = await endpoint(loop, local_addr=addr, reuse_port=True)
        opts = [
            t.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            for t in (tr1, tr2)
        ]
        # Without the option the port is taken.
        with pytest.raises(OSError) as info:
            await endpoint(loop, local_addr=addr)
        with udp_socket() as peer:
            for i in range(10):
                peer.sendto(b"%d" % i, addr)
            await eventually(lambda: len(pr1.received) + len(pr2.received) >= 10)
        tr1.close()
        tr2.close()
        await pr1.done
        await pr2.done
        return addr, tr2.get_extra_info("sockname"), opts, info.value, pr1.data + pr2.data

    addr, addr2, opts, exc, data = run(loop, main())
    assert addr2 == addr
    assert all(opts)
    assert exc.errno == errno.EADDRINUSE
    assert sorted(data) == sorted(b"%d" % i for i in range(10))


def test_allow_broadcast(loop):
    """SO_BROADCAST is set; with remote_addr the socket is not connected, yet sendto() without
    an address goes to remote_addr (asyncio's behaviour)."""

    async def main():
        plain, _ = await endpoint(loop, local_addr=LOCAL)
        with udp_socket() as peer:
            tr, pr = await endpoint(loop, remote_addr=peer.getsockname(), allow_broadcast=True)
            tr.sendto(b"via remote_addr")
            data, _ = await loop.sock_recvfrom(peer, 100)
            with pytest.raises(ValueError, match="Invalid address"):
                tr.sendto(b"x", ("127.0.0.1", closed_udp_port()))
        opts = [
            t.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
            for t in (tr, plain)
        ]
        peername = tr.get_extra_info("peername")
        tr.close()
        plain.close()
        await pr.done
        return opts, peername, data

    (broadcast, plain), peername, data = run(loop, main())
    assert broadcast != 0 and plain == 0
    assert peername is None
    assert data == b"via remote_addr"


# -- Unix datagram sockets ---------------------------------------------------------------------


def test_unix_datagram_paths(loop, tmp_path):
    srv_path = str(tmp_path / "srv")
    cli_path = str(tmp_path / "cli")

    async def main():
        srv_tr, srv = await endpoint(loop, family=socket.AF_UNIX, local_addr=srv_path)
        tr, pr = await endpoint(
            loop, family=socket.AF_UNIX, local_addr=cli_path, remote_addr=srv_path
        )
        tr.sendto(b"hello unix")
        await srv.wait_count(1)
        srv_tr.sendto(b"hi", srv.received[0][1])
        await pr.wait_count(1)
        with pytest.raises(ValueError, match="Invalid address"):
            tr.sendto(b"x", str(tmp_path / "elsewhere"))
        # An unbound sender (remote_addr only) has no address.
        anon_tr, anon = await endpoint(loop, family=socket.AF_UNIX, remote_addr=srv_path)
        anon_tr.sendto(b"anonymous")
        await srv.wait_count(2)
        info = (
            tr.get_extra_info("sockname"),
            tr.get_extra_info("peername"),
            srv_tr.get_extra_info("sockname"),
            srv_tr.get_extra_info("peername"),
        )
        for t in (tr, srv_tr, anon_tr):
            t.close()
        await srv.done
        return info, srv.received, pr.received

    info, srv_received, received = run(loop, main())
    assert info == (cli_path, srv_path, srv_path, None)
    assert srv_received == [(b"hello unix", cli_path), (b"anonymous", None)]
    assert received == [(b"hi", srv_path)]
    assert stat.S_ISSOCK(os.stat(srv_path).st_mode)  # asyncio leaves datagram paths behind


def test_unix_stale_socket_file_is_replaced(loop, tmp_path):
    path = str(tmp_path / "stale")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)

    async def main():
        tr, pr = await endpoint(loop, family=socket.AF_UNIX, local_addr=path)
        with unix_dgram_socket() as sender:
            sender.sendto(b"after the stale file", path)
            await pr.wait_count(1)
        tr.close()
        await pr.done
        return pr.data

    assert run(loop, main()) == [b"after the stale file"]


def test_unix_other_file_is_not_removed(loop, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"keep me")

    async def main():
        with pytest.raises(OSError) as info:
            await endpoint(loop, family=socket.AF_UNIX, local_addr=str(path))
        return info.value

    exc = run(loop, main())
    assert exc.errno == errno.EADDRINUSE
    assert path.read_bytes() == b"keep me"


def test_unix_remote_path_missing(loop, tmp_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            await endpoint(loop, family=socket.AF_UNIX, remote_addr=str(tmp_path / "nobody"))

    run(loop, main())


def test_unix_abstract_namespace(loop):
    name = abstract_name()

    async def main():
        tr, pr = await endpoint(loop, family=socket.AF_UNIX, local_addr=name)
        with unix_dgram_socket() as sender:
            sender.sendto(b"abstract", name)
            await pr.wait_count(1)
        sockname = tr.get_extra_info("sockname")
        tr.close()
        await pr.done
        return sockname, pr.data

    sockname, data = run(loop, main())
    assert sockname == name.encode()  # Linux reports abstract names as bytes
    assert data == [b"abstract"]


# -- protocol callbacks -----------------------------------------------------------------------


def test_error_received_connection_refused(loop):
    """A connected socket learns from ICMP that nobody listens: error_received, and the
    transport stays open."""

    async def main():
        tr, pr = await endpoint(loop, remote_addr=("127.0.0.1", closed_udp_port()))
        # ICMP replies are rate limited: keep poking until one comes back.
        while not pr.errors:
            tr.sendto(b"anyone?")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pr.until(lambda: pr.errors), 0.2)
        closing = tr.is_closing()
        tr.close()
        await pr.done
        return pr, closing

    pr, closing = run(loop, main())
    assert isinstance(pr.errors[0], ConnectionRefusedError)
    assert pr.errors[0].errno == errno.ECONNREFUSED
    assert not closing
    assert pr.events[0] == "made" and pr.events[-1] == "lost" and pr.lost == [None]
    assert "data" not in pr.events


def test_error_received_on_send(loop, tmp_path):
    """A send that fails (no such Unix path) goes to error_received, not to the caller."""

    async def main():
        path = str(tmp_path / "srv")
        tr, pr = await endpoint(loop, family=socket.AF_UNIX, local_addr=path)
        tr.sendto(b"lost", str(tmp_path / "nobody"))
        errors = list(pr.errors)
        tr.sendto(b"to myself", path)
        await pr.wait_count(1)
        tr.close()
        await pr.done
        return errors, pr

    errors, pr = run(loop, main())
    assert len(errors) == 1 and isinstance(errors[0], FileNotFoundError)
    assert pr.data == [b"to myself"]
    assert pr.events == ["made", "error", "data", "lost"]


def test_exception_in_datagram_received_goes_to_handler(loop):
    """The exception reaches the loop's exception handler; later datagrams still arrive."""

    class Fussy(Datagrams):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"boom":
                raise RuntimeError("boom")

    async def main():
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        tr, pr = await endpoint(loop, lambda: Fussy(loop), local_addr=LOCAL)
        with udp_socket() as peer:
            for d in (b"a", b"boom", b"b", b"c"):
                peer.sendto(d, tr.get_extra_info("sockname"))
            await pr.wait_count(4)
        tr.close()
        await pr.done
        return contexts, pr

    contexts, pr = run(loop, main())
    assert pr.data == [b"a", b"boom", b"b", b"c"]
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], RuntimeError)
    assert pr.lost == [None]


def test_close_in_datagram_received_stops_delivery(loop):
    class CloseOnSecond(Datagrams):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if len(self.received) == 2:
                self.transport.close()

    async def main():
        tr, pr = await endpoint(loop, lambda: CloseOnSecond(loop), local_addr=LOCAL)
        with udp_socket() as peer:
            for i in range(5):
                peer.sendto(b"%d" % i, tr.get_extra_info("sockname"))
            await pr.done
        return pr

    pr = run(loop, main())
    assert pr.data == [b"0", b"1"]
    assert pr.events == ["made", "data", "data", "lost"]


def test_set_protocol_takes_effect_for_the_next_datagram(loop):
    """After set_protocol() in datagram_received, the next datagram goes to the new protocol,
    even when several were already queued."""

    async def main():
        second = Datagrams(loop)

        class Handover(Datagrams):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                self.transport.set_protocol(second)

        tr, first = await endpoint(loop, lambda: Handover(loop), local_addr=LOCAL)
        with udp_socket() as peer:
            for i in range(4):
                peer.sendto(b"%d" % i, tr.get_extra_info("sockname"))
            await eventually(lambda: len(first.received) + len(second.received) >= 4)
        tr.close()
        await second.done
        return first, second

    first, second = run(loop, main())
    assert first.data == [b"0"]
    assert second.data == [b"1", b"2", b"3"]


def test_callbacks_scheduled_by_datagram_received_run_before_the_next_datagram(loop):
    """asyncio hands over one datagram per loop iteration, so what datagram_received schedules
    (here: waking the task awaiting a one-shot future) runs before the next queued datagram is
    read. The common "first datagram, then close" pattern relies on it."""

    async def main():
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        first = loop.create_future()

        class OneShot(asyncio.DatagramProtocol):
            calls = 0

            def datagram_received(self, data, addr):
                self.calls += 1
                first.set_result(data)  # InvalidStateError on a second call

        tr, pr = await endpoint(loop, OneShot, local_addr=LOCAL)
        with udp_socket() as peer:
            for i in range(3):
                peer.sendto(b"%d" % i, tr.get_extra_info("sockname"))
            data = await first
            tr.close()
        await asyncio.sleep(0.05)
        return data, pr.calls, [ctx.get("exception") for ctx in contexts]

    data, calls, errors = run(loop, main())
    assert data == b"0"
    assert errors == []
    assert calls == 1


# -- the transport ------------------------------------------------------------------------------


def test_sendto_payload_types(loop):
    async def main():
        tr, pr = await endpoint(loop, local_addr=LOCAL)
        addr = tr.get_extra_info("sockname")
        out, _ = await endpoint(loop, local_addr=LOCAL)
        out.sendto(b"bytes", addr)
        out.sendto(bytearray(b"bytearray"), addr)
        out.sendto(memoryview(b"memoryview"), addr)
        out.sendto(memoryview(b"<sliced view>")[1:-1], addr)
        errors = []
        for bad in ("text", 123, None, [b"list"]):
            try:
                out.sendto(bad, addr)
            except TypeError as exc:
                errors.append(str(exc))
        await pr.wait_count(4)
        out.close()
        tr.close()
        await pr.done
        return pr.data, errors

    data, errors = run(loop, main())
    assert data == [b"bytes", b"bytearray", b"memoryview", b"sliced view"]
    assert len(errors) == 4 and all("bytes-like object" in e for e in errors)


def test_empty_datagram_like_stock_loop(loop):
    """Python 3.11 drops empty datagrams in sendto() (later versions send them): as asyncio."""

    async def scenario(lp):
        with udp_socket() as peer:
            tr, pr = await endpoint(lp, remote_addr=peer.getsockname())
            tr.sendto(b"")
            tr.sendto(b"", peer.getsockname())
            tr.sendto(b"end")
            got = []
            while not got or got[-1] != b"end":
                got.append((await lp.sock_recvfrom(peer, 100))[0])
            size = tr.get_write_buffer_size()
            tr.close()
            await pr.done
        return got, size

    expected = on_reference_loop(scenario)
    assert run(loop, scenario(loop)) == expected
    assert expected[0][-1] == b"end" and expected[1] == 0


def test_extra_info_and_repr(loop):
    async def main():
        tr, pr = await endpoint(loop, local_addr=LOCAL)
        tsock = tr.get_extra_info("socket")
        info = {
            "transport_socket": isinstance(tsock, asyncio.trsock.TransportSocket),
            "type": (tsock.family, tsock.type),
            "sockname": tr.get_extra_info("sockname") == tsock.getsockname(),
            "peername": tr.get_extra_info("peername"),
            "default": tr.get_extra_info("nope", "dflt"),
            "buffer": tr.get_write_buffer_size(),
            "protocol": tr.get_protocol() is pr,
        }
        reprs = [repr(tr)]
        tr.close()
        reprs.append(repr(tr))
        await pr.done
        reprs.append(repr(tr))
        return info, reprs

    info, reprs = run(loop, main())
    assert info == {
        "transport_socket": True,
        "type": (socket.AF_INET, socket.SOCK_DGRAM),
        "sockname": True,
        "peername": None,
        "default": "dflt",
        "buffer": 0,
        "protocol": True,
    }
    assert "fd=" in reprs[0] and "closing" not in reprs[0]
    assert "closing" in reprs[1]
    assert "closed" in reprs[2]


def test_close_twice_and_abort(loop):
    async def main():
        tr, pr = await endpoint(loop, local_addr=LOCAL)
        fd_sock = tr.get_extra_info("socket")
        assert not tr.is_closing()
        tr.close()
        tr.close()
        closing = tr.is_closing()
        await pr.done
        await asyncio.sleep(0)
        tr2, pr2 = await endpoint(loop, local_addr=LOCAL)
        tr2.abort()
        aborted_closing = tr2.is_closing()
        tr2.abort()
        tr2.close()
        await pr2.done
        await asyncio.sleep(0)
        return pr, pr2, closing, aborted_closing, fd_sock.fileno()

    pr, pr2, closing, aborted_closing, fileno = run(loop, main())
    assert closing and aborted_closing
    assert pr.events == ["made", "lost"] and pr.lost == [None]
    assert pr2.events == ["made", "lost"] and pr2.lost == [None]
    assert fileno == -1  # the socket is closed once connection_lost has run


def test_sendto_after_close_like_stock_loop(loop):
    """Connected: dropped, warned about from the 5th on. Unconnected: sent until
    connection_lost, then an error. Whatever asyncio does, we do."""

    async def scenario(lp, connected):
        contexts = []
        lp.set_exception_handler(lambda _lp, ctx: contexts.append(ctx))
        with udp_socket() as peer:
            addr = peer.getsockname()
            kw = {"remote_addr": addr} if connected else {"local_addr": LOCAL}
            tr, pr = await endpoint(lp, **kw)
            raised = []

            def send(data):
                try:
                    tr.sendto(data, addr)
                except Exception as exc:
                    raised.append(type(exc).__name__)

            send(b"before")
            tr.close()
            send(b"closing")
            await pr.done
            with asyncio_log() as logged:
                for i in range(8):
                    send(b"after %d" % i)
            await asyncio.sleep(0.05)
            got = drain(peer)
        return {
            "received": got,
            "raised": raised,
            "logged": logged,
            "handled": [(c["message"], type(c.get("exception")).__name__) for c in contexts],
            "events": pr.events,
        }

    for connected in (True, False):
        expected = on_reference_loop(scenario, connected)
        assert run(loop, scenario(loop, connected)) == expected, connected


def test_write_buffering_and_flow_control(loop, tmp_path):
    """A full AF_UNIX peer queue makes sendto() buffer: get_write_buffer_size() grows,
    pause_writing() once past the high-water mark, resume_writing() once drained; every
    datagram arrives intact and in order (buffered ones are copies)."""
    n = 40

    async def main():
        receiver, tr, pr, sent = await fill_unix_queue(loop, tmp_path, n)
        with receiver:
            buffered = tr.get_write_buffer_size()
            events_full = list(pr.events)
            got = []
            while len(got) < n:
                got.append((await loop.sock_recvfrom(receiver, 1000))[0])
            await pr.until(lambda: "resume" in pr.events)
            drained = tr.get_write_buffer_size()
        tr.close()
        await pr.done
        return buffered, events_full, drained, got, sent, pr

    buffered, events_full, drained, got, sent, pr = run(loop, main())
    assert buffered > 4 * 500 and buffered % DATAGRAM_COST == 0
    assert events_full == ["made", "pause"]
    if hasattr(selector_events._SelectorDatagramTransport, "_header_size"):
        # 3.14: the 8-byte header counted per buffered datagram is taken off when it is sent.
        assert drained == 0
    else:
        # asyncio 3.11-3.13 add the header to the count when buffering but do not take it off
        # when sending: drained, the count keeps 8 bytes per buffered datagram.
        assert drained == (buffered // DATAGRAM_COST) * (DATAGRAM_COST - 500)
    assert got == sent
    assert pr.events == ["made", "pause", "resume", "lost"]


@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_flushes_buffer_abort_drops_it(loop, tmp_path, how):
    n = 30

    async def main():
        receiver, tr, pr, sent = await fill_unix_queue(loop, tmp_path, n)
        with receiver:
            unsent = tr.get_write_buffer_size() // DATAGRAM_COST
            getattr(tr, how)()
            await asyncio.sleep(0.05)
            lost_early = pr.done.done()
            got = []
            if how == "close":
                while len(got) < n:
                    got.append((await loop.sock_recvfrom(receiver, 1000))[0])
                await pr.done
            else:
                await pr.done
                got = drain(receiver)
        return unsent, lost_early, got, sent, pr

    unsent, lost_early, got, sent, pr = run(loop, main())
    assert unsent > 0
    assert pr.lost == [None]
    if how == "close":
        assert not lost_early  # connection_lost waits for the buffer to be flushed
        assert got == sent
    else:
        assert lost_early
        assert got == sent[: n - unsent]


# -- datagrams: boundaries, order, echo ---------------------------------------------------------


def test_datagram_boundaries_and_order(loop):
    """Distinct sizes up to 60 KiB, sent in bursts: each arrives whole, in order."""
    sizes = [1, 2, 3, 7, 100, 512, 1400, 1472, 1473, 4096, 9000, 16 * KiB, 32 * KiB, 50_000]
    sizes += [60 * KiB - i for i in range(0, 60, 7)] + [i * 997 for i in range(1, 61, 3)]
    data = [payload(size, seed=i) for i, size in enumerate(sizes)]
    burst_bytes = 256 * KiB

    async def main():
        sock = udp_socket()
        raise_rcvbuf(sock)
        tr, pr = await endpoint(loop, sock=sock)
        out, _ = await endpoint(loop, local_addr=LOCAL)
        addr = tr.get_extra_info("sockname")
        i = 0
        while i < len(data):
            total = 0
            while i < len(data) and total < burst_bytes:
                out.sendto(data[i], addr)
                total += len(data[i])
                i += 1
            await pr.wait_count(i)
        out.close()
        tr.close()
        await pr.done
        return pr.received, out.get_extra_info("sockname")

    received, out_addr = run(loop, main())
    assert [len(d) for d, _ in received] == sizes
    assert [d for d, _ in received] == data
    assert {a for _, a in received} == {out_addr}


def test_many_small_datagrams_in_one_burst(loop):
    """Hundreds of datagrams queued at once (more than any per-wakeup read batch)."""
    n = 300

    async def main():
        sock = udp_socket()
        raise_rcvbuf(sock)
        tr, pr = await endpoint(loop, sock=sock)
        with udp_socket() as peer:
            for i in range(n):
                peer.sendto(b"%d:" % i + bytes(i % 50), tr.get_extra_info("sockname"))
            await pr.wait_count(n)
        tr.close()
        await pr.done
        return pr.data

    assert run(loop, main()) == [b"%d:" % i + bytes(i % 50) for i in range(n)]


@pytest.mark.parametrize("family", ["inet", "unix"])
def test_echo_round_trips(loop, tmp_path, family):
    rounds = 300

    async def main():
        if family == "inet":
            srv_tr, echo = await endpoint(loop, DatagramEcho, local_addr=LOCAL)
            kw = {"remote_addr": srv_tr.get_extra_info("sockname")}
        else:
            path = str(tmp_path / "echo")
            srv_tr, echo = await endpoint(
                loop, DatagramEcho, family=socket.AF_UNIX, local_addr=path
            )
            kw = {"family": socket.AF_UNIX, "local_addr": path + "c", "remote_addr": path}
        tr, pr = await endpoint(loop, **kw)
        sent = []
        for i in range(rounds):
            data = payload(1 + (i * 211) % 8000, seed=i)
            sent.append(data)
            tr.sendto(data)
            await pr.wait_count(i + 1)
        peers = set(echo.peers)
        tr.close()
        srv_tr.close()
        await pr.done
        return sent, pr.data, peers, tr.get_extra_info("sockname")

    sent, got, peers, client_addr = run(loop, main())
    assert got == sent
    assert peers == {client_addr}


# -- sock_recvfrom / sock_recvfrom_into / sock_sendto --------------------------------------------


def test_sock_sendto_recvfrom_immediate(loop):
    async def main():
        with udp_socket() as a, udp_socket() as b:
            n = await loop.sock_sendto(a, b"hello", b.getsockname())
            got = await loop.sock_recvfrom(b, 100)
            n6 = await loop.sock_sendto(a, memoryview(b"truncated datagram"), b.getsockname())
            short = await loop.sock_recvfrom(b, 9)
            return n, n6, got, short, a.getsockname()

    n, n6, got, short, a_addr = run(loop, main())
    assert (n, n6) == (5, 18)
    assert got == (b"hello", a_addr)
    assert short == (b"truncated", a_addr)  # the rest of the datagram is discarded


def test_sock_recvfrom_waits_for_data(loop):
    async def main():
        with udp_socket() as a, udp_socket() as b:
            task = loop.create_task(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0.05)
            pending = not task.done()
            loop.call_later(0.05, a.sendto, b"later", b.getsockname())
            got = await task
            reader_left = loop.remove_reader(b)
            return pending, got, a.getsockname(), reader_left

    pending, got, a_addr, reader_left = run(loop, main())
    assert pending
    assert got == (b"later", a_addr)
    assert reader_left is False  # the reader was removed once the datagram arrived


def test_sock_recvfrom_into(loop):
    async def main():
        with udp_socket() as a, udp_socket() as b:
            addr = b.getsockname()
            buf = bytearray(b"." * 16)
            a.sendto(b"0123456789", addr)
            whole = await loop.sock_recvfrom_into(b, buf)
            first = bytes(buf)
            a.sendto(b"abcdefghij", addr)
            part = await loop.sock_recvfrom_into(b, buf, 4)
            second = bytes(buf)
            with pytest.raises(ValueError):
                await loop.sock_recvfrom_into(b, buf, 17)  # nbytes larger than the buffer
            view = memoryview(bytearray(8))
            task = loop.create_task(loop.sock_recvfrom_into(b, view[2:], 3))
            await asyncio.sleep(0.05)
            pending = not task.done()
            loop.call_later(0.05, a.sendto, b"XYZW", addr)
            late = await task
            return whole, first, part, second, pending, late, bytes(view), a.getsockname()

    whole, first, part, second, pending, late, view, a_addr = run(loop, main())
    assert whole == (10, a_addr) and first == b"0123456789......"
    assert part == (4, a_addr) and second == b"abcd456789......"
    assert pending and late == (3, a_addr) and view == b"\0\0XYZ\0\0\0"


async def recvfrom(loop, sock):
    data, addr = await loop.sock_recvfrom(sock, 100)
    return data, addr


async def recvfrom_into(loop, sock):
    buf = bytearray(100)
    n, addr = await loop.sock_recvfrom_into(sock, buf)
    return bytes(buf[:n]), addr


@pytest.mark.parametrize("receive", [recvfrom, recvfrom_into])
def test_sock_recvfrom_cancellation(loop, receive):
    """A cancelled wait removes its reader and consumes nothing: the next call gets the data."""

    async def main():
        with udp_socket() as a, udp_socket() as b:
            task = loop.create_task(receive(loop, b))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            reader_left = loop.remove_reader(b)
            a.sendto(b"after cancel", b.getsockname())
            got = await receive(loop, b)
            return reader_left, got, a.getsockname()

    reader_left, got, a_addr = run(loop, main())
    assert reader_left is False
    assert got == (b"after cancel", a_addr)


def test_sock_sendto_waits_for_room(loop, tmp_path):
    """On a full AF_UNIX peer queue sock_sendto() waits until the peer reads; cancelled while
    waiting, it sends nothing."""
    path = str(tmp_path / "r")

    async def main():
        with unix_dgram_socket(path) as receiver, unix_dgram_socket() as sender:
            sender.connect(path)
            queued = 0
            with contextlib.suppress(BlockingIOError):
                while queued < 10_000:
                    sender.send(b"fill")
                    queued += 1
            cancelled = loop.create_task(loop.sock_sendto(sender, b"cancelled", path))
            await asyncio.sleep(0.05)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            task = loop.create_task(loop.sock_sendto(sender, b"last", path))
            await asyncio.sleep(0.05)
            pending = not task.done()
            loop.call_later(0.05, receiver.recv, 100)
            n = await task
            got = []
            while not got or got[-1] != b"last":
                got.append((await loop.sock_recvfrom(receiver, 100))[0])
            await asyncio.sleep(0.05)
            return queued, pending, n, got, drain(receiver)

    queued, pending, n, got, rest = run(loop, main())
    assert 0 < queued < 10_000
    assert pending and n == 4
    assert got == [b"fill"] * (queued - 1) + [b"last"]
    assert rest == []


def test_sock_methods_refuse_blocking_sockets_in_debug_mode(loop):
    async def main():
        loop.set_debug(True)
        try:
            with udp_socket(blocking=True) as s:
                addr = s.getsockname()
                calls = [
                    loop.sock_recvfrom(s, 10),
                    loop.sock_recvfrom_into(s, bytearray(10)),
                    loop.sock_sendto(s, b"x", addr),
                ]
                messages = []
                for coro in calls:
                    with pytest.raises(ValueError) as info:
                        await coro
                    messages.append(str(info.value))
        finally:
            loop.set_debug(False)
        return messages

    assert run(loop, main()) == ["the socket must be non-blocking"] * 3


def test_sock_recvfrom_on_a_transport_socket_is_refused(loop):
    async def main():
        tr, pr = await endpoint(loop, local_addr=LOCAL)
        tsock = tr.get_extra_info("socket")
        raw = socket.socket(tsock.family, tsock.type, fileno=tsock.fileno())
        try:
            raw.setblocking(False)
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recvfrom(raw, 100)
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recvfrom_into(raw, bytearray(100))
        finally:
            raw.detach()
        tr.close()
        await pr.done

    run(loop, main())


# -- resources ----------------------------------------------------------------------------------


def test_no_fd_leaks(loop, tmp_path):
    async def cycle(i):
        srv_tr, srv = await endpoint(loop, local_addr=LOCAL)
        addr = srv_tr.get_extra_info("sockname")
        tr, pr = await endpoint(loop, remote_addr=addr)
        tr.sendto(b"x")
        await srv.wait_count(1)
        with pytest.raises(OSError):
            await endpoint(loop, local_addr=addr)  # port taken
        srv_tr.close()
        tr.abort()
        await srv.done
        await pr.done
        path = str(tmp_path / f"u{i}")
        utr, upr = await endpoint(loop, family=socket.AF_UNIX, local_addr=path)
        with pytest.raises(FileNotFoundError):
            await endpoint(loop, family=socket.AF_UNIX, remote_addr=path + "-missing")
        utr.close()
        await upr.done
        with udp_socket() as s:
            task = loop.create_task(loop.sock_recvfrom(s, 10))
            await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.sleep(0)

    run(loop, cycle(0))  # warm up
    settle_fds()
    before = fd_count()

    async def many():
        for i in range(1, 30):
            await cycle(i)

    run(loop, many())
    settle_fds()
    assert fd_count() == before
