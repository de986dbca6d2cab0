"""Transport.get_extra_info on TCP and Unix transports; TCP_NODELAY on TCP transports."""

import socket

import pytest
from net_helpers import Recorder, close_server, require_ipv6, run

pytestmark = pytest.mark.timeout(60)


async def tcp_pair(loop, host="127.0.0.1"):
    server_side = loop.create_future()

    def factory():
        # Later connections (a test may reuse the server) get a plain Recorder, which closes
        # its side when the client does.
        p = Recorder(loop)
        if not server_side.done():
            server_side.set_result(p)
        return p

    server = await loop.create_server(factory, host, 0)
    port = server.sockets[0].getsockname()[1]
    tr, pr = await loop.create_connection(lambda: Recorder(loop), host, port)
    srv = await server_side
    await srv.made
    return server, port, tr, pr, srv


def test_tcp_extra_info(loop):
    async def main():
        server, port, tr, pr, srv = await tcp_pair(loop)
        info = {}
        for side, t in (("client", tr), ("server", srv.transport)):
            sock = t.get_extra_info("socket")
            info[side] = {
                "family": sock.family,
                "type": sock.type,
                "fileno_ok": sock.fileno() >= 0,
                "sock_sockname": sock.getsockname(),
                "sock_peername": sock.getpeername(),
                "sockname": t.get_extra_info("sockname"),
                "peername": t.get_extra_info("peername"),
                "nodelay": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                "unknown": t.get_extra_info("no-such-key"),
                "default": t.get_extra_info("no-such-key", "dflt"),
                "default_known": t.get_extra_info("sockname", "dflt"),
            }
        tr.close()
        await pr.done
        await srv.done
        await close_server(server)
        return port, info

    port, info = run(loop, main())
    c, s = info["client"], info["server"]
    for side in (c, s):
        assert side["family"] == socket.AF_INET
        assert side["type"] == socket.SOCK_STREAM
        assert side["fileno_ok"]
        assert side["nodelay"] != 0
        assert side["unknown"] is None
        assert side["default"] == "dflt"
        assert side["default_known"] == side["sockname"]
        assert side["sockname"] == side["sock_sockname"]
        assert side["peername"] == side["sock_peername"]
    assert c["peername"] == ("127.0.0.1", port)
    assert s["sockname"] == ("127.0.0.1", port)
    assert c["sockname"] == s["peername"]
    assert c["peername"] == s["sockname"]


def test_tcp_extra_info_ipv6(loop):
    require_ipv6()

    async def main():
        server, port, tr, pr, srv = await tcp_pair(loop, host="::1")
        sock = tr.get_extra_info("socket")
        got = (
            sock.family,
            tr.get_extra_info("peername")[:2],
            srv.transport.get_extra_info("sockname")[:2],
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        )
        tr.close()
        await pr.done
        await close_server(server)
        return port, got

    port, (family, peer, sockname, nodelay) = run(loop, main())
    assert family == socket.AF_INET6
    assert peer == ("::1", port)
    assert sockname == ("::1", port)
    assert nodelay != 0


def test_socket_extra_info_is_the_transport_socket(loop):
    """create_connection(sock=...) keeps the very socket: same fd, same object state."""

    async def main():
        # Only the server is needed here: close the pair's own connection.
        server, port, pair_tr, pair_pr, _ = await tcp_pair(loop)
        pair_tr.close()
        await pair_pr.done
        s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", port))
        tr, pr = await loop.create_connection(lambda: Recorder(loop), sock=s)
        tsock = tr.get_extra_info("socket")
        got = (tsock.fileno() == s.fileno(), tr.get_extra_info("sockname") == s.getsockname())
        tr.close()
        await pr.done
        closed_fd = s.fileno()
        await close_server(server)
        return got, closed_fd

    (same_fd, same_name), closed_fd = run(loop, main())
    assert same_fd and same_name
    assert closed_fd == -1  # closing the transport closed the socket object passed in


def test_unix_extra_info(loop, tmp_path):
    path = str(tmp_path / "s.sock")

    async def main():
        server_side = loop.create_future()

        def factory():
            p = Recorder(loop)
            server_side.set_result(p)
            return p

        server = await loop.create_unix_server(factory, path)
        tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), path)
        srv = await server_side
        await srv.made
        got = {}
        for side, t in (("client", tr), ("server", srv.transport)):
            sock = t.get_extra_info("socket")
            got[side] = (
                sock.family,
                sock.type,
                t.get_extra_info("sockname"),
                t.get_extra_info("peername"),
                t.get_extra_info("nope", 42),
            )
        tr.close()
        await pr.done
        await close_server(server)
        return got

    got = run(loop, main())
    assert got["client"] == (socket.AF_UNIX, socket.SOCK_STREAM, "", path, 42)
    assert got["server"] == (socket.AF_UNIX, socket.SOCK_STREAM, path, "", 42)
