"""The UDP data path: what ferroloop's native reads and sends must keep exactly as asyncio.

Each test runs on both loops; the stock loop's behaviour is the reference. Covered: sender
addresses equal to the socket module's (IPv4, IPv6, IPv4-mapped on a dual-stack socket,
senders alternating, so a cached address is never handed to the wrong sender), replies to
alternating senders reaching each its own, and empty to maximum-size datagrams intact. The
rest of the datagram transport's behaviour is in test_udp.py.
"""

import asyncio
import socket

import pytest
from net_helpers import DatagramEcho, require_ipv6

pytestmark = pytest.mark.timeout(60)


class Collect(asyncio.DatagramProtocol):
    def __init__(self, loop, want):
        self.got = []
        self.want = want
        self.done = loop.create_future()

    def datagram_received(self, data, addr):
        self.got.append((data, addr))
        if len(self.got) == self.want and not self.done.done():
            self.done.set_result(None)


async def receive_from(loop, family, host, senders, count, *, bind_host=None):
    """Datagrams `count` x len(senders) from plain sockets, sent before the loop reads."""
    proto = Collect(loop, count * len(senders))
    transport, _ = await loop.create_datagram_endpoint(
        lambda: proto, local_addr=(bind_host or host, 0), family=family
    )
    dest = transport.get_extra_info("sockname")[:2]
    dest = (host, dest[1])
    try:
        for i in range(count):
            for n, sender in enumerate(senders):
                sender.sendto(b"%d:%d" % (n, i), dest)
        await asyncio.wait_for(proto.done, 10)
    finally:
        transport.close()
    return proto.got


def senders_for(family, host, n):
    socks = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((host, 0))
        socks.append(s)
    return socks


@pytest.mark.parametrize(
    "family,host",
    [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
    ids=["ipv4", "ipv6"],
)
def test_sender_addresses_are_the_socket_modules(loop, family, host):
    if family == socket.AF_INET6:
        require_ipv6()
    senders = senders_for(family, host, 3)
    try:
        got = loop.run_until_complete(receive_from(loop, family, host, senders, 50))
    finally:
        names = [s.getsockname() for s in senders]
        for s in senders:
            s.close()
    # Every datagram is there, in order per sender, with that sender's own address.
    for n, name in enumerate(names):
        mine = [(data, addr) for data, addr in got if data.startswith(b"%d:" % n)]
        assert [data for data, _ in mine] == [b"%d:%d" % (n, i) for i in range(50)]
        assert {addr for _, addr in mine} == {name}
        assert all(type(addr) is tuple for _, addr in mine)


def test_ipv4_mapped_sender_on_dual_stack_socket(loop):
    require_ipv6()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    try:
        got = loop.run_until_complete(
            receive_from(loop, socket.AF_INET6, "127.0.0.1", [sender], 3, bind_host="::")
        )
    finally:
        port = sender.getsockname()[1]
        sender.close()
    assert [addr for _, addr in got] == [("::ffff:127.0.0.1", port, 0, 0)] * 3


def test_large_and_empty_datagrams_intact(loop):
    sizes = [0, 1, 1500, 9000, 65507]

    async def main():
        proto = Collect(loop, len(sizes))
        transport, _ = await loop.create_datagram_endpoint(
            lambda: proto, local_addr=("127.0.0.1", 0)
        )
        dest = transport.get_extra_info("sockname")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            for n in sizes:
                s.sendto(bytes([n % 251]) * n, dest)
            await asyncio.wait_for(proto.done, 10)
        transport.close()
        return [data for data, _ in proto.got]

    assert loop.run_until_complete(main()) == [bytes([n % 251]) * n for n in sizes]


def test_replies_reach_their_own_sender(loop):
    # Replies to alternating senders: a reply must never go to the previous sender.
    async def main():
        server, _ = await loop.create_datagram_endpoint(DatagramEcho, local_addr=("127.0.0.1", 0))
        dest = server.get_extra_info("sockname")
        clients = senders_for(socket.AF_INET, "127.0.0.1", 3)
        try:
            for i in range(20):
                for n, c in enumerate(clients):
                    c.sendto(b"%d:%d" % (n, i), dest)
            for n, c in enumerate(clients):
                c.setblocking(False)
                got = [await asyncio.wait_for(loop.sock_recv(c, 100), 10) for _ in range(20)]
                assert got == [b"%d:%d" % (n, i) for i in range(20)]
        finally:
            for c in clients:
                c.close()
            server.close()

    loop.run_until_complete(main())
