"""Unix domain stream sockets: create_unix_server / create_unix_connection and friends.

Path types (str, bytes, pathlib.Path), what is found at the path before bind (stale socket,
other files), the abstract namespace, sock= variants and their checks, connection errors,
connect_accepted_socket on a socketpair, extra info, what server close leaves on disk (compared
with a stock asyncio loop run in the same test) and many concurrent connections.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import socket
import stat

import pytest
from net_helpers import (
    EchoProtocol,
    KiB,
    MiB,
    Recorder,
    abstract_name,
    close_server,
    digest,
    fd_count,
    on_reference_loop,
    payload,
    raised_nofile,
    run,
    settle_fds,
)

pytestmark = pytest.mark.timeout(60)


# -- helpers ------------------------------------------------------------------------------------


async def echo_once(loop, path=None, *, sock=None, data=b"hello unix"):
    """Connect, send ``data``, half-close, read the echo until EOF."""
    if sock is None:
        tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), path)
    else:
        tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), sock=sock)
    tr.write(data)
    tr.write_eof()
    exc = await pr.done
    assert exc is None
    return bytes(pr.data)


def stale_socket_file(path):
    """Leave a socket file at ``path`` with nothing listening on it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(os.fspath(path))
    finally:
        s.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)


# -- paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlib"])
def test_path_types(loop, tmp_path, kind):
    base = tmp_path / "s.sock"
    path = {"str": str(base), "bytes": os.fsencode(base), "pathlib": base}[kind]

    async def main():
        server = await loop.create_unix_server(EchoProtocol, path)
        sockname = server.sockets[0].getsockname()
        is_socket = stat.S_ISSOCK(os.stat(base).st_mode)
        echoed = await echo_once(loop, path)
        await close_server(server)
        return sockname, is_socket, echoed

    sockname, is_socket, echoed = run(loop, main())
    assert sockname == str(base)
    assert is_socket
    assert echoed == b"hello unix"


def test_stale_socket_file_is_replaced(loop, tmp_path):
    path = str(tmp_path / "stale.sock")
    stale_socket_file(path)
    # A second name keeps the stale inode alive, so a new socket file cannot reuse its number.
    keep = str(tmp_path / "stale-link")
    os.link(path, keep)

    async def main():
        server = await loop.create_unix_server(EchoProtocol, path)
        echoed = await echo_once(loop, path)
        replaced = not os.path.samestat(os.stat(path), os.stat(keep))
        await close_server(server)
        return echoed, replaced

    echoed, replaced = run(loop, main())
    assert echoed == b"hello unix"
    assert replaced  # the stale socket file was removed and a new one bound
    assert os.stat(keep).st_nlink == 1  # ... removed (unlinked), not just renamed over


def test_live_server_socket_file_is_taken_over(loop, tmp_path):
    """asyncio removes any socket file at the path, even one a live server listens on."""
    path = str(tmp_path / "live.sock")

    async def main():
        def tagged(tag):
            class Tag(asyncio.Protocol):
                def connection_made(self, transport):
                    transport.write(tag)
                    transport.close()

            return Tag

        first = await loop.create_unix_server(tagged(b"first"), path)
        second = await loop.create_unix_server(tagged(b"second"), path)
        tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), path)
        await pr.done
        await close_server(first)
        await close_server(second)
        return bytes(pr.data)

    assert run(loop, main()) == b"second"


@pytest.mark.parametrize("what", ["file", "directory", "fifo"])
def test_non_socket_at_path_fails_with_eaddrinuse(loop, tmp_path, what):
    path = tmp_path / "occupied"
    if what == "file":
        path.write_bytes(b"precious")
    elif what == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    mode = os.stat(path).st_mode

    async def main():
        with pytest.raises(OSError) as ei:
            await loop.create_unix_server(EchoProtocol, str(path))
        return ei.value

    settle_fds()
    before = fd_count()
    err = run(loop, main())
    settle_fds()
    assert type(err) is OSError
    assert err.errno == errno.EADDRINUSE
    assert err.strerror == f"Address {str(path)!r} is already in use"
    # Nothing was removed or changed; the socket created for bind was closed.
    assert os.stat(path).st_mode == mode
    if what == "file":
        assert path.read_bytes() == b"precious"
    assert fd_count() == before


def test_bind_in_missing_directory_and_too_long_path(loop, tmp_path):
    async def main():
        errors = []
        for path in (str(tmp_path / "no" / "such" / "dir.sock"), "/tmp/" + "x" * 200):
            with pytest.raises(OSError) as ei:
                await loop.create_unix_server(EchoProtocol, path)
            errors.append(ei.value)
        return errors

    settle_fds()
    before = fd_count()
    missing, too_long = run(loop, main())
    settle_fds()
    assert type(missing) is FileNotFoundError
    assert type(too_long) is OSError and "too long" in str(too_long)
    assert fd_count() == before


# -- abstract namespace ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["str", "bytes"])
def test_abstract_namespace(loop, kind):
    name = abstract_name()
    path = name if kind == "str" else name.encode()

    async def main():
        accepted = loop.create_future()

        class Srv(EchoProtocol):
            def connection_made(self, transport):
                super().connection_made(transport)
                accepted.set_result(transport)

        server = await loop.create_unix_server(Srv, path)
        sockname = server.sockets[0].getsockname()
        tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), path)
        srv_tr = await accepted
        info = {
            "client_peername": tr.get_extra_info("peername"),
            "client_sockname": tr.get_extra_info("sockname"),
            "server_sockname": srv_tr.get_extra_info("sockname"),
            "server_peername": srv_tr.get_extra_info("peername"),
        }
        tr.write(b"abstract")
        tr.write_eof()
        await pr.done
        await close_server(server)
        return sockname, info, bytes(pr.data)

    sockname, info, echoed = run(loop, main())
    assert sockname == name.encode()
    assert info["client_peername"] == name.encode()
    assert info["server_sockname"] == name.encode()
    assert info["client_sockname"] == info["server_peername"] == ""
    assert echoed == b"abstract"


# -- sock= --------------------------------------------------------------------------------------


def test_server_and_connection_with_sock(loop, tmp_path):
    path = str(tmp_path / "pre.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    csock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    async def main():
        server = await loop.create_unix_server(EchoProtocol, sock=lsock)
        same = server.sockets[0].fileno() == lsock.fileno()
        blocking_server = lsock.getblocking()
        csock.connect(path)  # a blocking connect; the loop makes it non-blocking
        echoed = await echo_once(loop, sock=csock, data=payload(300 * KiB, seed=51))
        blocking_client = csock.getblocking()
        await close_server(server)
        return same, blocking_server, echoed, blocking_client

    try:
        same, blocking_server, echoed, blocking_client = run(loop, main())
    finally:
        lsock.close()
        csock.close()
    assert same
    assert blocking_server is False and blocking_client is False
    assert echoed == payload(300 * KiB, seed=51)


def test_server_with_abstract_sock(loop):
    name = abstract_name()
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(name)

    async def main():
        server = await loop.create_unix_server(EchoProtocol, sock=lsock)
        echoed = await echo_once(loop, name)
        await close_server(server)
        return echoed

    try:
        assert run(loop, main()) == b"hello unix"
    finally:
        lsock.close()


@pytest.mark.parametrize(
    "family,type_",
    [
        (socket.AF_INET, socket.SOCK_STREAM),
        (socket.AF_UNIX, socket.SOCK_DGRAM),
        (socket.AF_UNIX, socket.SOCK_SEQPACKET),
    ],
    ids=["tcp", "unix-dgram", "unix-seqpacket"],
)
def test_wrong_socket_type(loop, family, type_):
    async def main():
        messages = []
        with socket.socket(family, type_) as sock:
            expected = f"A UNIX Domain Stream Socket was expected, got {sock!r}"
            with pytest.raises(ValueError) as ei:
                await loop.create_unix_server(EchoProtocol, sock=sock)
            messages.append(str(ei.value))
            with pytest.raises(ValueError) as ei:
                await loop.create_unix_connection(EchoProtocol, sock=sock)
            messages.append(str(ei.value))
            still_open = sock.fileno() != -1
        return messages, expected, still_open

    messages, expected, still_open = run(loop, main())
    assert messages == [expected, expected]
    assert still_open  # the caller's socket is left alone


def test_argument_errors(loop, tmp_path):
    path = str(tmp_path / "args.sock")

    async def main():
        m = {}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            with pytest.raises(ValueError) as ei:
                await loop.create_unix_server(EchoProtocol, path, sock=sock)
            m["server_both"] = str(ei.value)
            with pytest.raises(ValueError) as ei:
                await loop.create_unix_connection(EchoProtocol, path, sock=sock)
            m["conn_both"] = str(ei.value)
        with pytest.raises(ValueError) as ei:
            await loop.create_unix_server(EchoProtocol)
        m["server_none"] = str(ei.value)
        with pytest.raises(ValueError) as ei:
            await loop.create_unix_connection(EchoProtocol)
        m["conn_none"] = str(ei.value)
        with pytest.raises(TypeError) as ei:
            await loop.create_unix_server(EchoProtocol, path, ssl=True)
        m["ssl_bool"] = str(ei.value)
        with pytest.raises(ValueError) as ei:
            await loop.create_unix_server(EchoProtocol, path, ssl_handshake_timeout=1)
        m["server_timeout"] = str(ei.value)
        with pytest.raises(ValueError) as ei:
            await loop.create_unix_connection(EchoProtocol, path, server_hostname="x")
        m["conn_hostname"] = str(ei.value)
        return m

    m = run(loop, main())
    assert m == {
        "server_both": "path and sock can not be specified at the same time",
        "conn_both": "path and sock can not be specified at the same time",
        "server_none": "path was not specified, and no sock specified",
        "conn_none": "no path and sock were specified",
        "ssl_bool": "ssl argument must be an SSLContext or None",
        "server_timeout": "ssl_handshake_timeout is only meaningful with ssl",
        "conn_hostname": "server_hostname is only meaningful with ssl",
    }
    assert not os.path.exists(path)


# -- connection errors --------------------------------------------------------------------------


def test_connect_errors(loop, tmp_path):
    missing = str(tmp_path / "missing.sock")
    stale = str(tmp_path / "stale.sock")
    stale_socket_file(stale)
    regular = tmp_path / "regular"
    regular.write_bytes(b"")

    async def main():
        errors = {}
        for name, path in (("missing", missing), ("stale", stale), ("regular", str(regular))):
            with pytest.raises(OSError) as ei:
                await loop.create_unix_connection(EchoProtocol, path)
            errors[name] = ei.value
        with pytest.raises(FileNotFoundError):
            await asyncio.open_unix_connection(missing)
        return errors

    settle_fds()
    before = fd_count()
    errors = run(loop, main())
    settle_fds()
    assert type(errors["missing"]) is FileNotFoundError
    assert errors["missing"].errno == errno.ENOENT
    assert type(errors["stale"]) is ConnectionRefusedError  # a socket file, nobody listening
    assert type(errors["regular"]) is ConnectionRefusedError
    assert fd_count() == before
    assert not os.path.exists(missing)


# -- connect_accepted_socket -------------------------------------------------------------------


def test_connect_accepted_socket_on_socketpair(loop):
    data = payload(2 * MiB, seed=52)
    a, b = socket.socketpair()

    async def main():
        tr_b, _ = await loop.connect_accepted_socket(EchoProtocol, b)
        tr_a, pr_a = await loop.connect_accepted_socket(lambda: Recorder(loop), a)
        info = {
            "family": tr_a.get_extra_info("socket").family,
            "sockname": tr_a.get_extra_info("sockname"),
            "peername": tr_a.get_extra_info("peername"),
            "b_peername": tr_b.get_extra_info("peername"),
            "nonblocking": (a.getblocking(), b.getblocking()),
        }
        tr_a.write(data)
        tr_a.write_eof()
        exc = await pr_a.done
        return info, exc, bytes(pr_a.data), tr_b.is_closing()

    try:
        info, exc, echoed, b_closing = run(loop, main())
    finally:
        a.close()
        b.close()
    assert info["family"] == socket.AF_UNIX
    assert info["sockname"] == info["peername"] == info["b_peername"] == ""
    assert info["nonblocking"] == (False, False)
    assert exc is None
    assert digest(echoed) == digest(data)
    assert b_closing


def test_connect_accepted_socket_rejects_non_stream(loop):
    async def main():
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError) as ei:
                await loop.connect_accepted_socket(EchoProtocol, sock)
            return str(ei.value), f"A Stream Socket was expected, got {sock!r}"

    got, expected = run(loop, main())
    assert got == expected


# -- extra info --------------------------------------------------------------------------------


def test_extra_info_with_bound_client(loop, tmp_path):
    path = str(tmp_path / "srv.sock")
    client_path = str(tmp_path / "cli.sock")

    async def main():
        accepted = loop.create_future()

        class Srv(EchoProtocol):
            def connection_made(self, transport):
                super().connection_made(transport)
                accepted.set_result(transport)

        server = await loop.create_unix_server(Srv, path)
        csock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        csock.bind(client_path)
        csock.connect(path)
        tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), sock=csock)
        srv_tr = await accepted
        info = {
            "c_sockname": tr.get_extra_info("sockname"),
            "c_peername": tr.get_extra_info("peername"),
            "s_sockname": srv_tr.get_extra_info("sockname"),
            "s_peername": srv_tr.get_extra_info("peername"),
            "s_family": srv_tr.get_extra_info("socket").family,
            "s_peercred_len": len(
                srv_tr.get_extra_info("socket").getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, 12
                )
            ),
        }
        tr.close()
        await pr.done
        await close_server(server)
        return info

    info = run(loop, main())
    assert info["c_sockname"] == client_path
    assert info["c_peername"] == path
    assert info["s_sockname"] == path
    assert info["s_peername"] == client_path
    assert info["s_family"] == socket.AF_UNIX
    assert info["s_peercred_len"] == 12


# -- server close and the socket file -----------------------------------------------------------


async def _close_scenario(lp, directory):
    """What remains at the path after close; also with the path replaced by another file."""
    directory = pathlib.Path(directory)
    path = str(directory / "plain.sock")
    accepted = lp.create_future()

    def factory():
        p = Recorder(lp)
        accepted.set_result(p)
        return p

    server = await lp.create_unix_server(factory, path)
    tr, pr = await lp.create_unix_connection(lambda: Recorder(lp), path)
    srv = await accepted
    await srv.made
    server.close()
    plain = os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode)
    tr.close()
    await pr.done
    await srv.done
    # From 3.12 wait_closed() also waits for the accepted connections, so only now.
    await server.wait_closed()

    replaced = str(directory / "replaced.sock")
    server = await lp.create_unix_server(EchoProtocol, replaced)
    os.unlink(replaced)
    pathlib.Path(replaced).write_bytes(b"not a socket")
    server.close()
    await server.wait_closed()
    replaced_left = pathlib.Path(replaced).read_bytes() if os.path.exists(replaced) else None

    ctx = str(directory / "ctx.sock")
    async with await lp.create_unix_server(EchoProtocol, ctx):
        pass
    ctx_left = os.path.exists(ctx)

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        given = str(directory / "given.sock")
        sock.bind(given)
        server = await lp.create_unix_server(EchoProtocol, sock=sock)
        server.close()
        await server.wait_closed()
        given_left = os.path.exists(given)
    return {"plain": plain, "replaced": replaced_left, "ctx": ctx_left, "given": given_left}


def test_server_close_leaves_what_asyncio_leaves(loop, tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "test").mkdir()
    expected = on_reference_loop(_close_scenario, tmp_path / "ref")
    got = run(loop, _close_scenario(loop, tmp_path / "test"))
    assert got == expected
    # Whatever asyncio does with its own socket file, it never removes someone else's file.
    assert got["replaced"] == b"not a socket"


def test_server_close_keeps_accepted_connections(loop, tmp_path):
    path = str(tmp_path / "keep.sock")

    async def main():
        server = await loop.create_unix_server(EchoProtocol, path)
        tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), path)
        await asyncio.sleep(0)
        server.close()
        with pytest.raises(OSError):
            await loop.create_unix_connection(lambda: Recorder(loop), path)
        tr.write(b"still here")
        await pr.wait_bytes(10)
        tr.write_eof()
        exc = await pr.done
        await server.wait_closed()
        return exc, bytes(pr.data)

    exc, echoed = run(loop, main())
    assert exc is None
    assert echoed == b"still here"


# -- streams and many connections ---------------------------------------------------------------


def test_unix_streams_echo(loop, tmp_path):
    path = str(tmp_path / "streams.sock")
    data = payload(4 * MiB, seed=53)

    async def handle(reader, writer):
        while chunk := await reader.read(64 * KiB):
            writer.write(chunk)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_unix_server(handle, path)
        reader, writer = await asyncio.open_unix_connection(path)

        async def send():
            writer.write(data)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        got = await reader.read()
        await sender
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return got

    got = run(loop, main(), timeout=50)
    assert digest(got) == digest(data)


def test_many_concurrent_unix_connections(loop, tmp_path):
    path = str(tmp_path / "many.sock")
    n = 200

    async def main():
        server = await loop.create_unix_server(EchoProtocol, path, backlog=n)

        async def one(i):
            reader, writer = await asyncio.open_unix_connection(path)
            msg = f"unix-{i:04d}|".encode() * (1 + i % 50)
            writer.write(msg)
            writer.write_eof()
            got = await reader.read()
            writer.close()
            await writer.wait_closed()
            return got == msg

        results = await asyncio.gather(*(one(i) for i in range(n)))
        await close_server(server)
        return results

    settle_fds()
    with raised_nofile():
        before = fd_count()
        results = run(loop, main(), timeout=50)
        settle_fds()
        after = fd_count()
    assert results == [True] * n
    assert after == before
