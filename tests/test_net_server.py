"""loop.create_server and the Server object."""

import asyncio
import errno
import socket
import textwrap

import pytest
from net_helpers import (
    EchoProtocol,
    Recorder,
    close_server,
    closed_port,
    ipv6_loopback_available,
    run,
)

pytestmark = pytest.mark.timeout(60)


async def roundtrip(loop, host, port, msg=b"ping", family=0):
    reader, writer = await asyncio.open_connection(host, port, family=family)
    writer.write(msg)
    writer.write_eof()
    got = await reader.read()
    writer.close()
    await writer.wait_closed()
    return got


async def refused(loop, host, port):
    try:
        tr, _ = await loop.create_connection(asyncio.Protocol, host, port)
    except ConnectionRefusedError:
        return True
    tr.close()
    return False


def test_create_server_port_zero(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        socks = server.sockets
        names = [s.getsockname() for s in socks]
        got = await roundtrip(loop, "127.0.0.1", names[0][1])
        info = (
            server.get_loop() is loop,
            server.is_serving(),
            [s.family for s in socks],
            [s.type for s in socks],
            [s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in socks],
        )
        server.close()
        after = (server.is_serving(), tuple(server.sockets))
        await server.wait_closed()
        return names, got, info, after

    names, got, info, after = run(loop, main())
    assert len(names) == 1
    assert names[0][0] == "127.0.0.1" and names[0][1] > 0
    assert got == b"ping"
    assert info == (True, True, [socket.AF_INET], [socket.SOCK_STREAM], [1])
    assert after == (False, ())


def test_sockets_is_a_tuple_snapshot(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        a, b = server.sockets, server.sockets
        await close_server(server)
        return a, b

    a, b = run(loop, main())
    assert isinstance(a, tuple) and len(a) == 1
    assert a[0].fileno() == b[0].fileno() == -1 or a[0].getsockname() == b[0].getsockname()


def test_create_server_host_list(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, ["127.0.0.1", "127.0.0.2"], 0)
        names = sorted(s.getsockname() for s in server.sockets)
        results = [await roundtrip(loop, h, p, msg=h.encode()) for h, p in names]
        await close_server(server)
        return names, results

    names, results = run(loop, main())
    assert [h for h, _ in names] == ["127.0.0.1", "127.0.0.2"]
    assert results == [b"127.0.0.1", b"127.0.0.2"]


def test_create_server_host_list_with_ipv6(loop):
    if not ipv6_loopback_available():
        pytest.skip("IPv6 loopback ::1 cannot be bound on this host")

    async def main():
        server = await loop.create_server(EchoProtocol, ["127.0.0.1", "::1"], 0)
        socks = {s.family: s.getsockname() for s in server.sockets}
        v6only = [
            s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            for s in server.sockets
            if s.family == socket.AF_INET6
        ]
        r4 = await roundtrip(loop, "127.0.0.1", socks[socket.AF_INET][1], b"v4")
        r6 = await roundtrip(loop, "::1", socks[socket.AF_INET6][1], b"v6")
        await close_server(server)
        return set(socks), v6only, r4, r6

    families, v6only, r4, r6 = run(loop, main())
    assert families == {socket.AF_INET, socket.AF_INET6}
    assert v6only == [1]
    assert (r4, r6) == (b"v4", b"v6")


def test_create_server_host_none_binds_all_interfaces(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, None, 0)
        socks = [(s.family, s.getsockname()) for s in server.sockets]
        v4 = [name for fam, name in socks if fam == socket.AF_INET]
        got = await roundtrip(loop, "127.0.0.1", v4[0][1])
        await close_server(server)
        return socks, got

    socks, got = run(loop, main())
    families = sorted(fam for fam, _ in socks)
    expected = [socket.AF_INET]
    if ipv6_loopback_available():
        expected.append(socket.AF_INET6)
    assert families == sorted(expected)
    for fam, name in socks:
        assert name[0] == ("0.0.0.0" if fam == socket.AF_INET else "::")
    assert got == b"ping"


def test_create_server_empty_host_binds_all_interfaces(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "", 0)
        hosts = sorted(s.getsockname()[0] for s in server.sockets)
        await close_server(server)
        return hosts

    hosts = run(loop, main())
    assert "0.0.0.0" in hosts


def test_reuse_address_default_and_off(loop):
    async def main():
        default = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        off = await loop.create_server(EchoProtocol, "127.0.0.1", 0, reuse_address=False)
        got = [
            s.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) for s in (default, off)
        ]
        await close_server(default)
        await close_server(off)
        return got

    default, off = run(loop, main())
    assert default != 0  # asyncio sets SO_REUSEADDR by default on POSIX
    assert off == 0


def test_reuse_port_lets_two_servers_share_a_port(loop):
    async def main():
        s1 = await loop.create_server(EchoProtocol, "127.0.0.1", 0, reuse_port=True)
        port = s1.sockets[0].getsockname()[1]
        s2 = await loop.create_server(EchoProtocol, "127.0.0.1", port, reuse_port=True)
        opts = [s.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in (s1, s2)]
        port2 = s2.sockets[0].getsockname()[1]
        await close_server(s1)
        got = await roundtrip(loop, "127.0.0.1", port)  # s2 still serves the port
        await close_server(s2)
        return port, port2, opts, got

    port, port2, opts, got = run(loop, main())
    assert port == port2
    assert all(o != 0 for o in opts)
    assert got == b"ping"


def test_address_in_use(loop):
    async def main():
        s1 = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        port = s1.sockets[0].getsockname()[1]
        try:
            with pytest.raises(OSError) as ei:
                await loop.create_server(EchoProtocol, "127.0.0.1", port)
        finally:
            await close_server(s1)
        return ei.value

    err = run(loop, main())
    assert err.errno == errno.EADDRINUSE
    assert "error while attempting to bind on address" in str(err)


def test_start_serving_false_then_start_serving(loop):
    async def main():
        made = []

        class P(asyncio.Protocol):
            def connection_made(self, tr):
                made.append(tr)

        server = await loop.create_server(P, "127.0.0.1", 0, start_serving=False)
        port = server.sockets[0].getsockname()[1]
        before = server.is_serving()
        refused_before = await refused(loop, "127.0.0.1", port)
        await server.start_serving()
        await server.start_serving()  # idempotent
        after = server.is_serving()
        tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        for _ in range(100):
            if made:
                break
            await asyncio.sleep(0.01)
        tr.close()
        for t in made:
            t.close()
        await close_server(server)
        return before, refused_before, after, len(made)

    before, refused_before, after, n = run(loop, main())
    assert before is False
    assert refused_before is True  # not even listening before start_serving()
    assert after is True
    assert n == 1


def test_serve_forever_and_cancellation(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, start_serving=False)
        port = server.sockets[0].getsockname()[1]
        task = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0.01)
        serving = server.is_serving()
        got = await roundtrip(loop, "127.0.0.1", port)
        with pytest.raises(RuntimeError):
            await server.serve_forever()  # already being awaited
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = server.is_serving()
        refused_after = await refused(loop, "127.0.0.1", port)
        with pytest.raises(RuntimeError):
            await server.serve_forever()  # closed
        return serving, got, after, refused_after

    serving, got, after, refused_after = run(loop, main())
    assert serving is True
    assert got == b"ping"
    assert after is False
    assert refused_after is True


def test_async_with_closes_server(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server as s:
            same = s is server
            got = await roundtrip(loop, "127.0.0.1", port)
        after = server.is_serving()
        await server.wait_closed()
        return same, got, after, await refused(loop, "127.0.0.1", port)

    same, got, after, refused_after = run(loop, main())
    assert same and got == b"ping"
    assert after is False
    assert refused_after is True


def test_close_and_wait_closed(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        server.close()  # idempotent
        await server.wait_closed()
        await server.wait_closed()
        return server.is_serving(), server.sockets, await refused(loop, "127.0.0.1", port)

    serving, socks, refused_after = run(loop, main())
    assert serving is False
    assert tuple(socks) == ()
    assert refused_after is True


def test_server_close_keeps_existing_connections(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        tr.write(b"one")
        await pr.wait_bytes(3)
        server.close()
        await asyncio.sleep(0.02)
        tr.write(b"two")
        await pr.wait_bytes(6)
        new_refused = await refused(loop, "127.0.0.1", port)
        tr.write_eof()
        await pr.done
        await server.wait_closed()
        return bytes(pr.data), new_refused, pr.lost

    data, new_refused, lost = run(loop, main())
    assert data == b"onetwo"
    assert new_refused is True
    assert lost == [None]


def _needs_close_clients(flavor):
    from asyncio import base_events

    if flavor.name == "asyncio" and not hasattr(base_events.Server, "close_clients"):
        pytest.skip("asyncio's Server has close_clients/abort_clients from Python 3.13")


@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_close_clients_and_abort_clients(loop, flavor, how):
    """close_clients flushes then closes every accepted connection; abort_clients drops them."""
    _needs_close_clients(flavor)
    # More than loopback's socket buffers hold, so some of it is still buffered in the transport.
    big = b"x" * (32 * 1024 * 1024)
    accepted = []

    class Paused(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    class Sender(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.append(transport)
            transport.write(big)

    async def main():
        server = await loop.create_server(Sender, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [
            await loop.create_connection(lambda: Paused(loop), "127.0.0.1", port) for _ in range(3)
        ]
        while len(accepted) < 3:
            await asyncio.sleep(0.01)
        buffered = [t.get_write_buffer_size() > 0 for t in accepted]
        server.close()
        getattr(server, how)()
        closing = [t.is_closing() for t in accepted]
        for tr, _ in clients:
            tr.resume_reading()
        for _, pr in clients:
            await asyncio.wait_for(pr.done, 10)
        await asyncio.wait_for(server.wait_closed(), 10)
        return buffered, closing, [(len(pr.data), pr.lost) for _, pr in clients]

    buffered, closing, results = run(loop, main())
    assert buffered == [True, True, True]
    assert closing == [True, True, True]
    for size, lost in results:
        if how == "close_clients":
            assert (size, lost) == (len(big), [None])
        else:
            assert size < len(big)
            assert len(lost) == 1


def test_connection_made_order_and_protocol_factory_per_connection(loop):
    async def main():
        protos = []

        def factory():
            p = Recorder(loop)
            protos.append(p)
            return p

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [
            await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
            for _ in range(5)
        ]
        for _ in range(100):
            if len(protos) == 5 and all(p.transport for p in protos):
                break
            await asyncio.sleep(0.01)
        for tr, pr in clients:
            tr.close()
            await pr.done
        await asyncio.gather(*(p.done for p in protos))
        await close_server(server)
        return protos

    protos = run(loop, main())
    assert len(protos) == 5 and len(set(map(id, protos))) == 5
    for p in protos:
        assert p.events == ["made", "eof", "lost"]
        assert p.lost == [None]


def test_create_server_bad_arguments(loop):
    async def main():
        errors = {}
        dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stream = socket.socket()
        try:
            for name, kwargs in {
                "neither": {},
                "host_and_sock": {"host": "127.0.0.1", "port": 0, "sock": stream},
                "dgram_sock": {"sock": dgram},
                "handshake_no_ssl": {"host": "127.0.0.1", "port": 0, "ssl_handshake_timeout": 1},
            }.items():
                try:
                    srv = await loop.create_server(EchoProtocol, **kwargs)
                except Exception as e:
                    errors[name] = type(e)
                else:
                    srv.close()
                    errors[name] = None
        finally:
            dgram.close()
            stream.close()
        return errors

    assert run(loop, main()) == {
        "neither": ValueError,
        "host_and_sock": ValueError,
        "dgram_sock": ValueError,
        "handshake_no_ssl": ValueError,
    }


def test_create_server_with_sock(loop):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        server = await loop.create_server(EchoProtocol, sock=lsock)
        same = server.sockets[0].fileno() == lsock.fileno()
        blocking = lsock.getblocking()
        got = await roundtrip(loop, "127.0.0.1", port)
        await close_server(server)
        return same, blocking, got, lsock.fileno()

    same, blocking, got, fileno_after = run(loop, main())
    assert same
    assert blocking is False
    assert got == b"ping"
    assert fileno_after == -1


def test_connect_to_closed_port_is_refused(loop):
    port = closed_port()

    async def main():
        return await refused(loop, "127.0.0.1", port)

    assert run(loop, main()) is True


EMFILE_SCRIPT = """
import asyncio, os, resource, socket, sys, time
from asyncio import constants

N = 5
loop = {loop_expr}
asyncio.set_event_loop(loop)
accepted = []
accept_times = []
errors = []

class P(asyncio.Protocol):
    def connection_made(self, tr):
        accepted.append(tr)
        accept_times.append(time.monotonic())
        tr.write(b"hi")

def handler(loop, context):
    exc = context.get("exception")
    errors.append((time.monotonic(), context["message"], getattr(exc, "errno", None)))

async def main():
    loop.set_exception_handler(handler)
    server = await loop.create_server(P, "127.0.0.1", 0, backlog=64)
    port = server.sockets[0].getsockname()[1]
    clients = []
    for _ in range(N):
        c = socket.socket()
        c.settimeout(5)
        clients.append(c)
    # Exhaust every remaining descriptor.
    hogs = []
    while True:
        try:
            hogs.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as e:
            assert e.errno == 24, e
            break
    # The kernel completes the handshakes (the listen backlog), but accept() hits EMFILE.
    for c in clients:
        c.connect(("127.0.0.1", port))
    await asyncio.sleep(0.3)
    during = len(accepted)
    for fd in hogs:
        os.close(fd)
    deadline = time.monotonic() + 10
    while len(accepted) < N and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    after = len(accepted)
    # The accepted connections really work.
    greetings = [c.recv(2) for c in clients]
    for c in clients:
        c.close()
    for tr in accepted:
        tr.close()
    server.close()
    await server.wait_closed()
    print("RESULT", during, after, greetings.count(b"hi"), len(hogs) > 0, flush=True)
    # asyncio's _accept_connection: each EMFILE is reported, the listening socket leaves the
    # selector and comes back ACCEPT_RETRY_DELAY later.
    first_error, message, _ = errors[0]
    same = {{(m, e) for _, m, e in errors}} == {{(message, 24)}}
    print("RETRY", accept_times[0] - first_error, constants.ACCEPT_RETRY_DELAY, flush=True)
    print("ERRORS", same, repr(message), flush=True)

resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
loop.run_until_complete(main())
loop.close()
"""


def test_server_recovers_from_emfile(flavor, run_python, tmp_path):
    """The descriptors come back 0.3 s after the first EMFILE; the accept is retried
    ACCEPT_RETRY_DELAY (1 s) after it, as asyncio's loop does. The bounds leave a noisy machine
    0.9 s of slack: a retry a whole delay late (2 s) fails."""
    script = tmp_path / "emfile.py"
    script.write_text(
        flavor.python_code(textwrap.dedent(EMFILE_SCRIPT).format(loop_expr=flavor.loop_expr))
    )
    proc = run_python([*flavor.main_prefix[:1], str(script)], timeout=40)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split()[0]: line.split(None, 1)[1] for line in proc.stdout.splitlines() if line}
    assert "RESULT" in lines, proc.stdout + proc.stderr[-3000:]
    during, after, greeted, hogged = lines["RESULT"].split()
    assert hogged == "True"
    assert during == "0"
    assert after == "5"
    assert greeted == "5"
    retry, delay = map(float, lines["RETRY"].split())
    assert delay == 1.0
    assert delay - 0.05 <= retry < delay + 0.9, retry
    assert lines["ERRORS"] == "True 'socket.accept() out of system resource'"


@pytest.mark.parametrize("method", ["create_server", "create_unix_server"])
def test_server_methods_reject_wrong_arguments_at_the_call(loop, method):
    # As asyncio's coroutine functions: the TypeError comes from the call itself, before any
    # coroutine exists (so none is left un-awaited either).
    create = getattr(loop, method)
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'bogus'"):
        create(asyncio.Protocol, bogus=1)
    with pytest.raises(TypeError, match="positional argument"):
        create(asyncio.Protocol, None, None, None, None)


@pytest.mark.parametrize("method", ["create_server", "create_unix_server"])
def test_server_methods_have_asyncios_signature(loop, method):
    import inspect

    stock = asyncio.SelectorEventLoop()
    try:
        assert inspect.signature(getattr(loop, method)) == inspect.signature(getattr(stock, method))
        assert inspect.iscoroutinefunction(getattr(loop, method))
    finally:
        stock.close()


def test_connection_left_open_is_collected_with_its_loop_while_the_server_is_held(loop):
    """A connection the server accepted and nobody closed, after loop.close(): the program
    still holds the (closed) Server, which must not keep the connection alive (3.13's
    Server._clients is a WeakSet; 3.11's Server knows no clients). The collector finds the cycle
    transport <-> protocol, and the transport closes its socket as it goes."""
    import gc
    import warnings
    import weakref

    class Keeper(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            made.append(weakref.ref(transport))

    made = []

    async def main():
        server = await loop.create_server(Keeper, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname()[:2])
        for _ in range(100):
            if made:
                break
            await asyncio.sleep(0.01)
        server.close()
        return server, client

    server, client = run(loop, main())
    try:
        assert len(made) == 1
        loop.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        assert made[0]() is None
        client.settimeout(5)
        assert client.recv(10) == b""  # the accepted socket was closed
        assert server is not None
    finally:
        client.close()
