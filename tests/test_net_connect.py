"""loop.create_connection's arguments: host resolution, happy eyeballs, all_errors,
local_addr, sock, and misuse."""

import asyncio
import inspect
import socket
from asyncio import base_events

import pytest
from net_helpers import Recorder, close_server, closed_port, echo_server, run

pytestmark = pytest.mark.timeout(60)


async def echo_once(loop, **kw):
    tr, pr = await loop.create_connection(lambda: Recorder(loop), **kw)
    tr.write(b"ping")
    await asyncio.wait_for(pr.wait_bytes(4), 5)
    peer = tr.get_extra_info("peername")
    tr.close()
    await pr.done
    return bytes(pr.data), peer


@pytest.mark.parametrize("delay, interleave", [(None, None), (0.05, None), (0.05, 2)])
def test_localhost_with_happy_eyeballs(loop, delay, interleave):
    """'localhost' may resolve to ::1 first while the server is IPv4 only: the race must
    still end connected to 127.0.0.1."""

    async def main():
        server, port = await echo_server(loop)
        got = await echo_once(
            loop,
            host="localhost",
            port=port,
            happy_eyeballs_delay=delay,
            interleave=interleave,
        )
        await close_server(server)
        return got, port

    (data, peer), port = run(loop, main())
    assert data == b"ping"
    assert peer == ("127.0.0.1", port)


HAS_ALL_ERRORS = (
    "all_errors" in inspect.signature(base_events.BaseEventLoop.create_connection).parameters
)


def test_all_errors_raises_an_exception_group(loop):
    """all_errors is new in Python 3.12: ferroloop follows the running Python's asyncio."""
    port = closed_port()

    async def main():
        if not HAS_ALL_ERRORS:
            with pytest.raises(TypeError, match="all_errors"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, all_errors=True)
            return None
        with pytest.raises(ExceptionGroup) as info:
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, all_errors=True)
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        return info.value

    group = run(loop, main())
    if HAS_ALL_ERRORS:
        assert [type(e) for e in group.exceptions] == [ConnectionRefusedError]


def test_local_addr(loop):
    async def main():
        server, port = await echo_server(loop)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        local_port = probe.getsockname()[1]
        probe.close()
        tr, pr = await loop.create_connection(
            lambda: Recorder(loop), "127.0.0.1", port, local_addr=("127.0.0.1", local_port)
        )
        sockname = tr.get_extra_info("sockname")
        tr.close()
        await pr.done
        await close_server(server)
        return sockname, local_port

    sockname, local_port = run(loop, main())
    assert sockname == ("127.0.0.1", local_port)


def test_connect_with_a_connected_sock(loop):
    async def main():
        server, port = await echo_server(loop)
        sock = socket.create_connection(("127.0.0.1", port))
        got = await echo_once(loop, sock=sock)
        closed = sock.fileno() == -1
        await close_server(server)
        return got, closed

    (data, _), closed = run(loop, main())
    assert data == b"ping"
    # The transport owned the socket and closed it.
    assert closed


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(), ValueError, "host and port was not specified and no sock specified"),
        (dict(host="127.0.0.1", port=1, sock=socket.socket), ValueError, "can not be specified"),
        (dict(host="127.0.0.1", port=1, server_hostname="x"), ValueError, "server_hostname"),
        (dict(host="127.0.0.1", port=1, ssl_handshake_timeout=1), ValueError, "only meaningful"),
        (
            dict(sock=lambda: socket.socket(type=socket.SOCK_DGRAM)),
            ValueError,
            "A Stream Socket was expected",
        ),
    ],
)
def test_create_connection_misuse(loop, kwargs, exc, match):
    made = []
    for key, value in kwargs.items():
        if callable(value):
            kwargs[key] = value()
            made.append(kwargs[key])

    async def main():
        with pytest.raises(exc, match=match):
            await loop.create_connection(asyncio.Protocol, **kwargs)

    try:
        run(loop, main())
    finally:
        for sock in made:
            sock.close()
