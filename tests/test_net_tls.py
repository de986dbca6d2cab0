"""TLS over the loop's transports (asyncio's sslproto on top of them).

A self-signed certificate for localhost / 127.0.0.1 is generated once per session with the
``openssl`` CLI. Covered: echo through create_server/create_connection and streams, the TLS
extra info on both sides, mutual TLS, start_tls upgrades (loop API and StreamWriter), verification
failures (unknown CA, hostname mismatch), handshake timeouts on both sides, TLS over Unix sockets,
clean close (close_notify both ways), sendfile over TLS (the fallback path) and asyncio's argument
checks.
"""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from net_helpers import (
    BufferedEcho,
    EchoProtocol,
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

HOSTNAME = "localhost"


# -- certificates -------------------------------------------------------------------------------


@dataclass
class Certs:
    cert: Path
    key: Path
    other_cert: Path  # an unrelated self-signed CA (same subject, different key)
    other_key: Path

    def server(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client(self, cafile: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(cafile or self.cert))


def _openssl_selfsigned(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line tool is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = _openssl_selfsigned(d, "good")
    other_cert, other_key = _openssl_selfsigned(d, "other")
    return Certs(cert, key, other_cert, other_key)


# -- helpers ------------------------------------------------------------------------------------


class EchoRecorder(Recorder):
    """A Recorder that also echoes what it receives."""

    def data_received(self, data):
        super().data_received(data)
        self.transport.write(data)


def chunks(data: bytes, size: int):
    return [data[i : i + size] for i in range(0, len(data), size)]


async def wait_fds(target: int, tries: int = 300) -> int:
    """Let pending closes run until the fd count is back to ``target`` (or give up)."""
    n = fd_count()
    for _ in range(tries):
        settle_fds()
        n = fd_count()
        if n <= target:
            return n
        await asyncio.sleep(0.01)
    return n


def run_counting_fds(loop, coro):
    """Run ``coro``, then let pending closes run: (its result, fds before, fds after)."""
    settle_fds()
    before = fd_count()
    result = run(loop, coro)
    return result, before, run(loop, wait_fds(before))


class MadeLogger(Recorder):
    """A Recorder that appends its transport to the list ``log`` in connection_made."""

    def __init__(self, loop, log: list):
        super().__init__(loop)
        self.log = log

    def connection_made(self, transport):
        self.log.append(transport)
        super().connection_made(transport)


async def connected_pair(
    loop, server_factory=None, client_factory=None, *, server_ssl=None, client_ssl=None
):
    """A server with one connected client, once the server protocol's connection_made ran.

    Returns (server, client tr, client pr, server pr); both protocols default to Recorder. With
    ``client_ssl`` the client checks the server's certificate against HOSTNAME.
    """
    factory, accepted = first_accepted(loop, server_factory or (lambda: Recorder(loop)))
    server, port = await echo_server(loop, factory, ssl=server_ssl)
    client_kw = {} if client_ssl is None else {"ssl": client_ssl, "server_hostname": HOSTNAME}
    tr, pr = await loop.create_connection(
        client_factory or (lambda: Recorder(loop)), "127.0.0.1", port, **client_kw
    )
    srv = await accepted
    await srv.made
    return server, tr, pr, srv


async def tls_pair(
    loop, certs, server_factory=None, client_factory=None, *, server_ctx=None, client_ctx=None
):
    """connected_pair() over TLS; the contexts default to the session certificate's."""
    return await connected_pair(
        loop,
        server_factory,
        client_factory,
        server_ssl=certs.server() if server_ctx is None else server_ctx,
        client_ssl=certs.client() if client_ctx is None else client_ctx,
    )


async def tls_echo_client(loop, certs, client_factory=None, server_factory=EchoProtocol, **kw):
    """A TLS echo server and a client connected to it (``kw`` goes to create_connection):
    (server, client tr, client pr). Unlike tls_pair() it does not wait for the server side."""
    server, port = await echo_server(loop, server_factory, ssl=certs.server())
    tr, pr = await loop.create_connection(
        client_factory or (lambda: Recorder(loop)), "127.0.0.1", port, ssl=certs.client(), **kw
    )
    return server, tr, pr


async def tls_streams(certs, handle):
    """asyncio.start_server(handle) over TLS and a stream client: (server, reader, writer)."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=certs.server())
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=certs.client(), server_hostname=HOSTNAME
    )
    return server, reader, writer


async def wait_lost(server, *protocols):
    """Await each protocol's connection_lost in turn, then close the server: their exceptions."""
    excs = [await p.done for p in protocols]
    await close_server(server)
    return excs


def raw_listener():
    """A blocking listening socket for a stdlib SSL peer run in a thread: (socket, port)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(15)
    return lsock, lsock.getsockname()[1]


def unread_bytes(fd: int) -> int:
    """Bytes waiting in a socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def quiet_handler(contexts):
    def handler(loop, context):
        contexts.append(context)

    return handler


# -- echo ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 64 * KiB, 4 * MiB], ids=["1B", "64KiB", "4MiB"])
def test_tls_echo_protocol(loop, certs, size):
    data = payload(size, seed=21)

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs, lambda: EchoRecorder(loop))
        third = max(1, size // 3)
        tr.write(data[:third])
        tr.writelines(chunks(data[third:], 100 * KiB))
        await pr.wait_bytes(size)
        tr.close()
        exc, srv_exc = await wait_lost(server, pr, srv)
        return exc, srv_exc, pr, srv

    exc, srv_exc, pr, srv = run(loop, main(), timeout=50)
    assert exc is None and srv_exc is None
    assert len(pr.data) == size and digest(pr.data) == digest(data)
    assert digest(srv.data) == digest(data)
    assert pr.events[0] == "made" and pr.events[-1] == "lost"
    assert srv.events[0] == "made" and srv.events[-2:] == ["eof", "lost"]


def test_tls_rides_on_the_loops_own_transport(loop, flavor, certs):
    """ssl= connections (both sides) sit on the loop's own stream transport, whose repr and
    debug logging work (asyncio's selector transport would read a selector ferroloop lacks)."""

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs, lambda: EchoRecorder(loop))
        raw = [t._ssl_protocol._transport for t in (tr, srv.transport)]
        reprs = [repr(t) for t in raw]
        tr.close()
        await wait_lost(server, pr, srv)
        return raw, reprs

    raw, reprs = run(loop, main())
    for t, text in zip(raw, reprs, strict=True):
        assert type(t).__module__.split(".")[0] == flavor.module
        assert "fd=" in text


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_tls_server_hostname_dns_and_ip_san(loop, certs, server_hostname):
    """The certificate names both DNS:localhost and IP:127.0.0.1; either verifies."""

    async def main():
        server, tr, pr = await tls_echo_client(loop, certs, server_hostname=server_hostname)
        tr.write(b"ping")
        await pr.wait_bytes(4)
        sslobj = tr.get_extra_info("ssl_object")
        hostname = sslobj.server_hostname
        tr.close()
        await wait_lost(server, pr)
        return bytes(pr.data), hostname

    data, hostname = run(loop, main())
    assert data == b"ping"
    assert hostname == server_hostname


def test_tls_host_name_defaults_server_hostname(loop, certs):
    """Without server_hostname the host argument is what the certificate is checked against."""

    async def main():
        server, tr, pr = await tls_echo_client(loop, certs)  # no server_hostname
        hostname = tr.get_extra_info("ssl_object").server_hostname
        tr.write(b"abc")
        await pr.wait_bytes(3)
        tr.close()
        await wait_lost(server, pr)
        return bytes(pr.data), hostname

    data, hostname = run(loop, main())
    assert data == b"abc"
    assert hostname == "127.0.0.1"


class MemoryviewEcho(BufferedEcho):
    """BufferedEcho handing out a memoryview.

    3.11's sslproto fills ``buf[offset:]`` after a partial read, which for a bytearray is a
    copy; with a memoryview it is the buffer itself.
    """

    def get_buffer(self, sizehint):
        self.sizehints.append(sizehint)
        return memoryview(self.buf)


def test_tls_buffered_protocols(loop, certs):
    """sslproto feeds a BufferedProtocol application through get_buffer/buffer_updated."""
    data = payload(MiB, seed=22)

    class Client(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = memoryview(bytearray(10 * KiB))
            self.got = bytearray()
            self.done = loop.create_future()
            self.full = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            assert 0 < nbytes <= len(self.buf)
            self.got += self.buf[:nbytes]
            if len(self.got) >= len(data) and not self.full.done():
                self.full.set_result(None)

        def connection_lost(self, exc):
            self.done.set_result(exc)

    async def main():
        server, tr, pr = await tls_echo_client(
            loop, certs, Client, MemoryviewEcho, server_hostname=HOSTNAME
        )
        tr.write(data)
        await pr.full
        tr.close()
        (exc,) = await wait_lost(server, pr)
        return exc, pr.got

    exc, got = run(loop, main())
    assert exc is None
    assert digest(got) == digest(data)


def test_tls_streams(loop, certs):
    data = payload(256 * KiB, seed=23)
    lines = [line + b"\n" for line in data.hex().encode().split(b"0")[:2000]]

    async def handle(reader, writer):
        assert writer.get_extra_info("ssl_object") is not None
        while line := await reader.readline():
            writer.write(line[::-1])
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server, reader, writer = await tls_streams(certs, handle)
        assert writer.can_write_eof() is False
        got = []
        for line in lines:
            writer.write(line)
            await writer.drain()
            got.append(await reader.readexactly(len(line)))
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return got

    got = run(loop, main(), timeout=50)
    assert got == [line[::-1] for line in lines]


def test_tls_streams_server_closes_client_reads_to_eof(loop, certs):
    data = payload(2 * MiB, seed=24)

    async def handle(reader, writer):
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server, reader, writer = await tls_streams(certs, handle)
        got = await reader.read()
        at_eof = reader.at_eof()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return got, at_eof

    got, at_eof = run(loop, main())
    assert at_eof
    assert digest(got) == digest(data)


# -- flow control -------------------------------------------------------------------------------


def test_tls_pause_writing_with_slow_reader(loop, certs):
    """Writes pile up behind a reader that stops: pause_writing, then resume_writing."""
    data = payload(16 * MiB, seed=27)

    class Writer(Recorder):
        def __init__(self, loop):
            super().__init__(loop)
            self.flow = []
            self.resumed = loop.create_future()

        def pause_writing(self):
            self.flow.append("pause")

        def resume_writing(self):
            self.flow.append("resume")
            if not self.resumed.done():
                self.resumed.set_result(None)

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs, client_factory=lambda: Writer(loop))
        srv.transport.pause_reading()
        # sslproto encrypts into the socket transport at once; once that one is over its
        # high-water mark, further writes stay in the SSL layer and pause the application.
        for chunk in chunks(data, 64 * KiB):
            tr.write(chunk)
        paused_after_write = list(pr.flow)
        ssl_buffered = tr.get_write_buffer_size()
        srv.transport.resume_reading()
        await pr.resumed
        await srv.wait_bytes(len(data))
        tr.close()
        await wait_lost(server, pr, srv)
        return paused_after_write, ssl_buffered, pr.flow, bytes(srv.data)

    paused_after_write, ssl_buffered, flow, got = run(loop, main(), timeout=50)
    assert paused_after_write == ["pause"]
    assert ssl_buffered > 0
    assert flow[:2] == ["pause", "resume"]
    assert digest(got) == digest(data)


def test_tls_pause_reading_stops_delivery(loop, certs):
    """While the TLS transport is paused, data reaches the socket but is not delivered."""
    data = payload(16 * MiB, seed=28)

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs)
        tr.pause_reading()
        paused = tr.is_reading()
        for chunk in chunks(data, 64 * KiB):
            srv.transport.write(chunk)
        # Wait (bounded) until encrypted data sits in the reader's socket.
        fd = tr.get_extra_info("socket").fileno()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if unread_bytes(fd) > 0:
                break
        arrived = unread_bytes(fd) > 0
        for _ in range(20):
            await asyncio.sleep(0)
        seen_while_paused = len(pr.data)
        tr.resume_reading()
        reading = tr.is_reading()
        await pr.wait_bytes(len(data))
        tr.close()
        await wait_lost(server, pr, srv)
        return paused, arrived, seen_while_paused, reading, bytes(pr.data)

    paused, arrived, seen, reading, got = run(loop, main(), timeout=50)
    assert paused is False and reading is True
    assert arrived
    assert seen == 0  # nothing was delivered while paused
    assert digest(got) == digest(data)


# -- extra info ---------------------------------------------------------------------------------


def test_tls_extra_info_both_sides(loop, certs):
    server_ctx = certs.server()
    client_ctx = certs.client()

    async def main():
        server, tr, pr, srv = await tls_pair(
            loop, certs, server_ctx=server_ctx, client_ctx=client_ctx
        )
        port = server.sockets[0].getsockname()[1]
        info = {}
        for side, t in (("client", tr), ("server", srv.transport)):
            sslobj = t.get_extra_info("ssl_object")
            info[side] = {
                "ssl_object": sslobj,
                "is_sslobject": isinstance(sslobj, ssl.SSLObject),
                "server_side": sslobj.server_side,
                "version": sslobj.version(),
                "peercert": t.get_extra_info("peercert"),
                "cipher": t.get_extra_info("cipher"),
                "compression": t.get_extra_info("compression"),
                "sslcontext": t.get_extra_info("sslcontext"),
                "sslobj_cipher": sslobj.cipher(),
                "sslobj_compression": sslobj.compression(),
                "peername": t.get_extra_info("peername"),
                "sockname": t.get_extra_info("sockname"),
                "socket_family": t.get_extra_info("socket").family,
                "missing": t.get_extra_info("no-such-key", "dflt"),
            }
        tr.close()
        await wait_lost(server, pr, srv)
        return port, info

    port, info = run(loop, main())
    c, s = info["client"], info["server"]
    assert c["is_sslobject"] and s["is_sslobject"]
    assert c["ssl_object"] is not s["ssl_object"]
    assert c["server_side"] is False and s["server_side"] is True
    assert c["sslcontext"] is client_ctx
    assert s["sslcontext"] is server_ctx
    # The client sees the server's certificate; the server asked for none.
    peercert = c["peercert"]
    assert isinstance(peercert, dict)
    assert (("commonName", "localhost"),) in peercert["subject"]
    assert ("DNS", "localhost") in peercert["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in peercert["subjectAltName"]
    assert s["peercert"] is None
    # Both ends negotiated the same cipher; the extra info is the SSL object's view.
    assert isinstance(c["cipher"], tuple) and len(c["cipher"]) == 3
    assert c["cipher"] == c["sslobj_cipher"]
    assert s["cipher"] == s["sslobj_cipher"]
    assert c["cipher"][:2] == s["cipher"][:2]
    assert c["compression"] == c["sslobj_compression"]
    assert s["compression"] == s["sslobj_compression"]
    assert c["version"] == s["version"] and c["version"].startswith("TLS")
    # The socket-level keys pass through to the underlying transport.
    assert c["peername"] == ("127.0.0.1", port)
    assert s["sockname"] == ("127.0.0.1", port)
    assert c["sockname"] == s["peername"]
    assert c["socket_family"] == s["socket_family"] == socket.AF_INET
    assert c["missing"] == s["missing"] == "dflt"


def test_tls_mutual_authentication(loop, certs):
    """A server that requires a client certificate sees it as its peercert."""
    server_ctx = certs.server()
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(str(certs.cert))
    client_ctx = certs.client()
    client_ctx.load_cert_chain(certs.cert, certs.key)

    async def main():
        server, tr, pr, srv = await tls_pair(
            loop, certs, lambda: EchoRecorder(loop), server_ctx=server_ctx, client_ctx=client_ctx
        )
        tr.write(b"hello")
        await pr.wait_bytes(5)
        peercert = srv.transport.get_extra_info("peercert")
        tr.close()
        await wait_lost(server, pr, srv)
        return bytes(pr.data), peercert

    data, peercert = run(loop, main())
    assert data == b"hello"
    assert isinstance(peercert, dict)
    assert (("commonName", "localhost"),) in peercert["subject"]


def test_tls_mutual_authentication_missing_client_cert(loop, certs):
    """No client certificate where one is required: the connection fails, nothing leaks."""
    server_ctx = certs.server()
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(str(certs.cert))
    contexts = []

    async def main():
        loop.set_exception_handler(quiet_handler(contexts))
        made = []
        server, port = await echo_server(loop, lambda: MadeLogger(loop, made), ssl=server_ctx)
        try:
            tr, pr = await loop.create_connection(
                lambda: Recorder(loop),
                "127.0.0.1",
                port,
                ssl=certs.client(),
                server_hostname=HOSTNAME,
            )
        except (ssl.SSLError, ConnectionError) as exc:
            outcome = ("raised", exc)
        else:
            # TLS 1.3: the client may finish its handshake before the server rejects it;
            # the rejection then ends the connection.
            tr.write(b"x")
            await pr.done
            outcome = ("lost", pr)
            tr.close()
        await close_server(server)
        return outcome, made

    ((how, what), made), before, after = run_counting_fds(loop, main())
    if how == "lost":
        assert what.data == b""  # not a byte of application data got through
        assert len(what.lost) == 1 and what.events[-1] == "lost"
        assert what.lost[0] is None or isinstance(what.lost[0], OSError)
    else:
        assert isinstance(what, ssl.SSLError | ConnectionError)
    assert made == []  # the server's application never saw the connection
    assert after == before, f"fd leak: {before} -> {after}"


# -- start_tls ----------------------------------------------------------------------------------


def test_start_tls_loop_api_both_sides(loop, certs):
    """A plain connection is upgraded with loop.start_tls() on both ends."""

    async def main():
        server, tr, pr, srv = await connected_pair(loop)  # plain TCP
        port = server.sockets[0].getsockname()[1]

        # Plain-text negotiation first.
        tr.write(b"STARTTLS\n")
        await srv.wait_bytes(9)
        srv.transport.write(b"OK\n")
        await pr.wait_bytes(3)
        plain_before = tr.get_extra_info("ssl_object"), srv.transport.get_extra_info("ssl_object")

        srv_app, cli_app = Recorder(loop), Recorder(loop)
        s_tr, c_tr = await asyncio.gather(
            loop.start_tls(srv.transport, srv_app, certs.server(), server_side=True),
            loop.start_tls(tr, cli_app, certs.client(), server_hostname=HOSTNAME),
        )
        c_tr.write(b"secret request")
        await srv_app.wait_bytes(14)
        s_tr.write(b"secret reply")
        await cli_app.wait_bytes(12)
        info = {
            "c_ssl": isinstance(c_tr.get_extra_info("ssl_object"), ssl.SSLObject),
            "s_ssl": isinstance(s_tr.get_extra_info("ssl_object"), ssl.SSLObject),
            "c_peercert": c_tr.get_extra_info("peercert"),
            "c_peername": c_tr.get_extra_info("peername"),
            "c_protocol": c_tr.get_protocol() is cli_app,
            "old_protocol_replaced": tr.get_protocol() is not pr,
        }
        c_tr.close()
        c_exc, s_exc = await wait_lost(server, cli_app, srv_app)
        return plain_before, srv, pr, srv_app, cli_app, info, c_exc, s_exc, port

    plain_before, srv, pr, srv_app, cli_app, info, c_exc, s_exc, port = run(loop, main())
    assert plain_before == (None, None)
    assert bytes(srv.data) == b"STARTTLS\n" and bytes(pr.data) == b"OK\n"
    assert bytes(srv_app.data) == b"secret request"
    assert bytes(cli_app.data) == b"secret reply"
    assert info["c_ssl"] and info["s_ssl"]
    assert (("commonName", "localhost"),) in info["c_peercert"]["subject"]
    assert info["c_peername"] == ("127.0.0.1", port)
    assert info["c_protocol"] and info["old_protocol_replaced"]
    # start_tls() does not call connection_made() on the new protocol.
    assert "made" not in cli_app.events and "made" not in srv_app.events
    assert c_exc is None and s_exc is None
    # The plain protocols were replaced, so they never hear of the close.
    assert "lost" not in pr.events and "lost" not in srv.events


def test_start_tls_streams_both_sides(loop, certs):
    """StreamWriter.start_tls(): server side inferred for start_server's handler."""
    server_ctx = certs.server()

    async def handle(reader, writer):
        line = await reader.readline()
        assert line == b"STARTTLS\n"
        assert writer.get_extra_info("ssl_object") is None
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        assert writer.get_extra_info("ssl_object").server_side
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\n")
        ok = await reader.readline()
        before = writer.get_extra_info("ssl_object")
        await writer.start_tls(certs.client(), server_hostname=HOSTNAME)
        after = writer.get_extra_info("ssl_object")
        replies = []
        for word in (b"alpha\n", b"beta\n", b"gamma\n" * 1000):
            writer.write(word)
            await writer.drain()
            replies.append(await reader.readexactly(len(word)))
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return ok, before, after, replies

    ok, before, after, replies = run(loop, main())
    assert ok == b"OK\n"
    assert before is None
    assert isinstance(after, ssl.SSLObject) and not after.server_side
    assert replies == [b"ALPHA\n", b"BETA\n", b"GAMMA\n" * 1000]


def test_start_tls_bad_arguments(loop, certs):
    async def main():
        server, tr, pr = await tls_echo_client(loop, certs, server_hostname=HOSTNAME)
        errors = []
        # Not an SSLContext.
        with pytest.raises(TypeError) as ei:
            await loop.start_tls(tr, pr, object(), server_hostname=HOSTNAME)
        errors.append(str(ei.value))
        still_open = not tr.is_closing()
        tr.close()
        await wait_lost(server, pr)
        return errors, still_open

    errors, still_open = run(loop, main())
    assert len(errors) == 1
    assert errors[0].startswith("sslcontext is expected to be an instance of ssl.SSLContext")
    assert still_open


# -- verification failures ----------------------------------------------------------------------


def _connect_expecting_failure(loop, certs, *, cafile, server_hostname):
    contexts = []

    async def main():
        loop.set_exception_handler(quiet_handler(contexts))
        made = []
        server, port = await echo_server(loop, lambda: MadeLogger(loop, made), ssl=certs.server())
        with pytest.raises(ssl.SSLCertVerificationError) as ei:
            await loop.create_connection(
                lambda: Recorder(loop),
                "127.0.0.1",
                port,
                ssl=certs.client(cafile),
                server_hostname=server_hostname,
            )
        await close_server(server)
        return ei.value, made

    (err, made), before, after = run_counting_fds(loop, main())
    return err, made, before, after


def test_certificate_from_unknown_ca_fails_verification(loop, certs):
    err, made, before, after = _connect_expecting_failure(
        loop, certs, cafile=certs.other_cert, server_hostname=HOSTNAME
    )
    assert isinstance(err, ssl.SSLCertVerificationError)
    assert err.verify_code != 62  # not a hostname problem: the chain is not trusted
    assert "certificate verify failed" in str(err)
    assert made == []
    assert after == before, f"fd leak: {before} -> {after}"


def test_server_hostname_mismatch_fails(loop, certs):
    err, made, before, after = _connect_expecting_failure(
        loop, certs, cafile=certs.cert, server_hostname="wrong.example"
    )
    assert isinstance(err, ssl.SSLCertVerificationError)
    assert err.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH
    assert "Hostname mismatch" in err.verify_message
    assert made == []
    assert after == before, f"fd leak: {before} -> {after}"


def test_stream_open_connection_bad_certificate(loop, certs):
    async def main():
        server, port = await echo_server(loop, ssl=certs.server())
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=certs.client(certs.other_cert), server_hostname=HOSTNAME
            )
        await close_server(server)

    loop.set_exception_handler(quiet_handler([]))
    _, before, after = run_counting_fds(loop, main())
    assert after == before


# -- handshake timeouts -------------------------------------------------------------------------


def test_client_handshake_timeout(loop, certs):
    """The server accepts TCP (kernel backlog) but never answers the ClientHello."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]

    async def main():
        with pytest.raises(Exception) as ei:
            await loop.create_connection(
                lambda: Recorder(loop),
                "127.0.0.1",
                port,
                ssl=certs.client(),
                server_hostname=HOSTNAME,
                ssl_handshake_timeout=0.3,
            )
        return ei.value

    try:
        err, before, after = run_counting_fds(loop, main())
    finally:
        lsock.close()
    # asyncio (3.11's sslproto) aborts the connection with ConnectionAbortedError.
    assert type(err) is ConnectionAbortedError, repr(err)
    assert "SSL handshake is taking longer than 0.3 seconds" in str(err)
    assert after == before, f"fd leak: {before} -> {after}"


def test_server_handshake_timeout_closes_silent_client(loop, certs):
    """A client that connects but never sends a ClientHello is dropped by the server."""
    made = []

    async def main():
        server, port = await echo_server(
            loop, lambda: MadeLogger(loop, made), ssl=certs.server(), ssl_handshake_timeout=0.3
        )
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            try:
                got = await loop.sock_recv(sock, 1024)
            except ConnectionResetError:
                got = b""
        finally:
            sock.close()
        await close_server(server)
        return got

    loop.set_exception_handler(quiet_handler([]))
    got, before, after = run_counting_fds(loop, main())
    assert got == b""  # the server closed the connection without a word
    assert made == []
    assert after == before, f"fd leak: {before} -> {after}"


# -- Unix sockets -------------------------------------------------------------------------------


def test_tls_over_unix_sockets(loop, certs, tmp_path):
    path = str(tmp_path / "tls.sock")
    data = payload(256 * KiB, seed=25)

    async def main():
        factory, accepted = first_accepted(loop, lambda: EchoRecorder(loop))
        server = await loop.create_unix_server(factory, path, ssl=certs.server())
        tr, pr = await loop.create_unix_connection(
            lambda: Recorder(loop), path, ssl=certs.client(), server_hostname=HOSTNAME
        )
        srv = await accepted
        tr.write(data)
        await pr.wait_bytes(len(data))
        info = (
            isinstance(tr.get_extra_info("ssl_object"), ssl.SSLObject),
            tr.get_extra_info("peername"),
            tr.get_extra_info("socket").family,
        )
        tr.close()
        exc, srv_exc = await wait_lost(server, pr, srv)
        return pr, exc, srv_exc, info

    pr, exc, srv_exc, info = run(loop, main())
    assert digest(pr.data) == digest(data)
    assert exc is None and srv_exc is None
    assert info == (True, path, socket.AF_UNIX)


def test_tls_unix_connection_requires_server_hostname(loop, certs, tmp_path):
    path = str(tmp_path / "tls.sock")

    async def main():
        server = await loop.create_unix_server(lambda: Recorder(loop), path, ssl=certs.server())
        with pytest.raises(ValueError) as ei:
            await loop.create_unix_connection(lambda: Recorder(loop), path, ssl=certs.client())
        await close_server(server)
        return str(ei.value)

    assert run(loop, main()) == "you have to pass server_hostname when using ssl"


# -- clean close (close_notify) ------------------------------------------------------------------


def test_client_close_is_clean_for_both_sides(loop, certs):
    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs, lambda: EchoRecorder(loop))
        tr.write(b"last words")
        await pr.wait_bytes(10)
        tr.close()
        closing = tr.is_closing()
        exc, srv_exc = await wait_lost(server, pr, srv)
        return closing, exc, srv_exc, pr, srv

    closing, exc, srv_exc, pr, srv = run(loop, main())
    assert closing
    assert exc is None and pr.lost == [None]
    # The server saw the close_notify as EOF, then the connection was lost cleanly.
    assert srv.events[-2:] == ["eof", "lost"] and srv.lost == [None]
    assert bytes(srv.data) == b"last words"


def test_server_close_is_seen_as_eof_by_client(loop, certs):
    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs)
        srv.transport.write(b"goodbye")
        srv.transport.close()
        await pr.eof
        exc, srv_exc = await wait_lost(server, pr, srv)
        return exc, srv_exc, pr

    exc, srv_exc, pr = run(loop, main())
    assert bytes(pr.data) == b"goodbye"
    assert pr.events[-2:] == ["eof", "lost"]
    assert exc is None and srv_exc is None


def test_close_sends_close_notify_to_a_raw_ssl_client(loop, certs):
    """A stdlib blocking SSL socket sees a clean TLS EOF (not a ragged one) when we close."""
    client_ctx = certs.client()

    def raw_client(port):
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        with client_ctx.wrap_socket(raw, server_hostname=HOSTNAME, suppress_ragged_eofs=False) as s:
            s.sendall(b"ping")
            got = bytearray()
            while chunk := s.recv(4096):  # SSLEOFError here would mean no close_notify
                got += chunk
            s.unwrap()  # answer with our own close_notify
            return bytes(got)

    async def main():
        class Srv(Recorder):
            def data_received(self, data):
                super().data_received(data)
                if bytes(self.data) == b"ping":
                    self.transport.write(b"pong")
                    self.transport.close()

        factory, accepted = first_accepted(loop, lambda: Srv(loop))
        server, port = await echo_server(loop, factory, ssl=certs.server())
        got = await loop.run_in_executor(None, raw_client, port)
        srv = await accepted
        (srv_exc,) = await wait_lost(server, srv)
        return got, srv_exc

    got, srv_exc = run(loop, main())
    assert got == b"pong"
    assert srv_exc is None


def test_close_sends_close_notify_to_a_raw_ssl_server(loop, certs):
    """Our client's close() reaches a stdlib blocking SSL server as a clean TLS EOF."""
    server_ctx = certs.server()
    lsock, port = raw_listener()

    def raw_server():
        conn, _ = lsock.accept()
        conn.settimeout(15)
        with server_ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False) as s:
            got = bytearray()
            while chunk := s.recv(4096):  # SSLEOFError here would mean no close_notify
                got += chunk
                s.sendall(chunk)
            s.unwrap()
            return bytes(got)

    async def main():
        fut = loop.run_in_executor(None, raw_server)
        tr, pr = await loop.create_connection(
            lambda: Recorder(loop), "127.0.0.1", port, ssl=certs.client(), server_hostname=HOSTNAME
        )
        tr.write(b"hello raw server")
        await pr.wait_bytes(16)
        tr.close()
        exc = await pr.done
        got = await fut
        return exc, got, bytes(pr.data)

    try:
        exc, got, echoed = run(loop, main())
    finally:
        lsock.close()
    assert got == b"hello raw server" == echoed
    assert exc is None


def test_shutdown_timeout_when_peer_never_answers_close_notify(loop, certs):
    """ssl_shutdown_timeout: a peer that never answers our close_notify is dropped after it."""
    server_ctx = certs.server()
    lsock, port = raw_listener()
    release = threading.Event()

    def mute_server():
        conn, _ = lsock.accept()
        conn.settimeout(15)
        with server_ctx.wrap_socket(conn, server_side=True) as s:
            s.recv(4096)  # the handshake and one record, then silence
            release.wait(15)

    async def main():
        fut = loop.run_in_executor(None, mute_server)
        tr, pr = await loop.create_connection(
            lambda: Recorder(loop),
            "127.0.0.1",
            port,
            ssl=certs.client(),
            server_hostname=HOSTNAME,
            ssl_shutdown_timeout=0.5,
        )
        tr.write(b"hi")
        await asyncio.sleep(0.1)
        start = loop.time()
        tr.close()
        exc = await asyncio.wait_for(pr.done, 10)
        elapsed = loop.time() - start
        release.set()
        await fut
        return exc, elapsed

    try:
        exc, elapsed = run(loop, main())
    finally:
        release.set()
        lsock.close()
    # asyncio's SSLProtocol aborts the transport once the timeout passes, and the protocol
    # learns why.
    assert isinstance(exc, TimeoutError) and "SSL shutdown timed out" in str(exc)
    assert 0.4 <= elapsed < 8


def test_abort_drops_tls_connection(loop, certs):
    """abort() closes at once: the peer's connection is lost (no clean TLS shutdown needed)."""

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs)
        tr.abort()
        exc, srv_exc = await wait_lost(server, pr, srv)
        return exc, pr.events, srv.events, srv_exc

    loop.set_exception_handler(quiet_handler([]))
    exc, events, srv_events, srv_exc = run(loop, main())
    assert exc is None
    assert events == ["made", "lost"]
    assert srv_events[0] == "made" and srv_events[-1] == "lost"
    assert srv_exc is None or isinstance(srv_exc, OSError)


# -- sendfile over TLS (fallback path only) ------------------------------------------------------


def test_sendfile_over_tls_uses_fallback(loop, certs, tmp_path):
    data = payload(3 * MiB + 123, seed=26)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs)
        with open(path, "rb") as f:
            with pytest.raises(RuntimeError) as ei:
                await loop.sendfile(tr, f, fallback=False)
            no_fallback = str(ei.value)
            sent = await loop.sendfile(tr, f, 100, len(data) - 200)
            pos = f.tell()
        tr.write(b"<end>")
        await srv.wait_bytes(len(data) - 200 + 5)
        tr.close()
        await wait_lost(server, pr, srv)
        return no_fallback, sent, pos, bytes(srv.data)

    no_fallback, sent, pos, got = run(loop, main(), timeout=50)
    assert no_fallback.startswith("fallback is disabled and native sendfile is not supported")
    assert sent == len(data) - 200
    assert pos == len(data) - 100
    assert digest(got) == digest(data[100:-100] + b"<end>")


# -- argument checks ----------------------------------------------------------------------------


def test_tls_argument_errors(loop, certs, tmp_path):
    async def main():
        server, port = await echo_server(loop)
        messages = {}
        cases = {
            "hostname_without_ssl": dict(server_hostname="localhost"),
            "timeout_without_ssl": dict(ssl_handshake_timeout=1.0),
            "shutdown_timeout_without_ssl": dict(ssl_shutdown_timeout=1.0),
        }
        for name, kw in cases.items():
            with pytest.raises(ValueError) as ei:
                await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port, **kw)
            messages[name] = str(ei.value)
        sock = socket.socket()
        try:
            sock.connect(("127.0.0.1", port))
            with pytest.raises(ValueError) as ei:
                await loop.create_connection(lambda: Recorder(loop), sock=sock, ssl=certs.client())
            messages["sock_without_hostname"] = str(ei.value)
        finally:
            sock.close()
        with pytest.raises(ValueError) as ei:
            await loop.create_server(
                lambda: Recorder(loop), "127.0.0.1", 0, ssl_handshake_timeout=1.0
            )
        messages["server_timeout_without_ssl"] = str(ei.value)
        # With sock= the socket stays ours when the call fails (asyncio does not close it).
        sock = socket.socket()
        try:
            sock.connect(("127.0.0.1", port))
            with pytest.raises(ValueError) as ei:
                await loop.create_connection(
                    lambda: Recorder(loop),
                    sock=sock,
                    ssl=certs.client(),
                    server_hostname=HOSTNAME,
                    ssl_handshake_timeout=-1,
                )
            messages["negative_timeout"] = str(ei.value)
        finally:
            sock.close()
        await close_server(server)
        return messages

    m = run(loop, main())
    assert m["hostname_without_ssl"] == "server_hostname is only meaningful with ssl"
    assert m["timeout_without_ssl"] == "ssl_handshake_timeout is only meaningful with ssl"
    assert m["shutdown_timeout_without_ssl"] == "ssl_shutdown_timeout is only meaningful with ssl"
    assert m["sock_without_hostname"] == (
        "You must set server_hostname when using ssl without a host"
    )
    assert m["server_timeout_without_ssl"] == "ssl_handshake_timeout is only meaningful with ssl"
    assert "ssl_handshake_timeout should be a positive number" in m["negative_timeout"]


# -- the TLS protocol's data path (native on ferroloop, asyncio's sslproto on the stock loop) ----


class CountingSSLObject(ssl.SSLObject):
    """An ``SSLContext.sslobject_class`` that counts the reads and writes asyncio makes."""

    calls = {"read": 0, "write": 0}

    def read(self, len=1024, buffer=None):
        CountingSSLObject.calls["read"] += 1
        return super().read(len, buffer)

    def write(self, data):
        CountingSSLObject.calls["write"] += 1
        return super().write(data)


def test_tls_sslobject_class_is_honoured(loop, certs):
    """A context's own SSLObject class does the reading and writing, on both sides."""
    data = payload(256 * KiB, seed=41)
    server_ctx, client_ctx = certs.server(), certs.client()
    server_ctx.sslobject_class = client_ctx.sslobject_class = CountingSSLObject
    CountingSSLObject.calls.update(read=0, write=0)

    async def main():
        server, tr, pr, srv = await tls_pair(
            loop, certs, lambda: EchoRecorder(loop), server_ctx=server_ctx, client_ctx=client_ctx
        )
        types = (
            type(tr.get_extra_info("ssl_object")),
            type(srv.transport.get_extra_info("ssl_object")),
        )
        tr.write(data)
        await pr.wait_bytes(len(data))
        tr.close()
        await wait_lost(server, pr, srv)
        return types, bytes(pr.data)

    types, got = run(loop, main(), timeout=50)
    assert types == (CountingSSLObject, CountingSSLObject)
    assert digest(got) == digest(data)
    # Each side wrote at least once and read each record it got (both directions).
    assert CountingSSLObject.calls["write"] >= 2
    assert CountingSSLObject.calls["read"] >= 4


def test_tls_transport_write_checks_and_pieces(loop, certs):
    """write() takes bytes-like objects only (asyncio's TypeError), ignores empty data, accepts
    data= by keyword; writelines() takes any iterable of bytes-like pieces."""

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs)
        errors = []
        for bad in ("text", 12, None, [b"x"]):
            with pytest.raises(TypeError) as ei:
                tr.write(bad)
            errors.append(str(ei.value))
        tr.write(b"")
        tr.write(bytearray())
        size_after_empty = tr.get_write_buffer_size()
        tr.write(data=b"kw|")
        tr.write(bytearray(b"ba|"))
        tr.write(memoryview(b"--mv|--")[2:-2])
        tr.writelines([b"l1|", bytearray(b"l2|"), memoryview(b"l3|")])
        tr.writelines(iter([b"g1|", b"g2|"]))
        tr.writelines((b"t1|",))
        want = b"kw|ba|mv|l1|l2|l3|g1|g2|t1|"
        await srv.wait_bytes(len(want))
        size = tr.get_write_buffer_size()
        tr.close()
        await wait_lost(server, pr, srv)
        return errors, size_after_empty, size, bytes(srv.data), want

    errors, size_after_empty, size, got, want = run(loop, main())
    assert errors == [
        "data: expecting a bytes-like instance, got str",
        "data: expecting a bytes-like instance, got int",
        "data: expecting a bytes-like instance, got NoneType",
        "data: expecting a bytes-like instance, got list",
    ]
    assert size_after_empty == 0 and type(size_after_empty) is int
    assert size == 0 and type(size) is int
    assert got == want


def test_tls_writelines_piece_without_length_raises(loop, certs):
    """asyncio measures each piece as it queues it: one without a length fails the call."""

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs)
        with pytest.raises(TypeError):
            tr.writelines([12])
        tr.abort()
        await wait_lost(server, pr, srv)

    run(loop, main())


def test_tls_data_received_error_is_fatal(loop, certs):
    """An exception in the app's data_received goes to the exception handler as asyncio's
    'Fatal error on SSL protocol' and the connection is torn down."""

    class Failing(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise ZeroDivisionError("app bug")

    async def main():
        contexts = []
        loop.set_exception_handler(quiet_handler(contexts))
        server, tr, pr, srv = await tls_pair(loop, certs, server_factory=lambda: Failing(loop))
        tr.write(b"boom")
        excs = await wait_lost(server, srv, pr)
        return contexts, excs

    contexts, (srv_exc, exc) = run(loop, main())
    fatal = [c for c in contexts if isinstance(c.get("exception"), ZeroDivisionError)]
    assert len(fatal) == 1
    assert fatal[0]["message"] == "Fatal error on SSL protocol"
    assert isinstance(srv_exc, ZeroDivisionError)


def test_tls_writes_after_close_are_dropped_with_a_warning(loop, certs, caplog):
    """After close(), writes are ignored; from the fifth on, asyncio logs that the SSL
    connection is closed."""

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs)
        tr.write(b"before")
        await srv.wait_bytes(6)
        tr.close()
        with caplog.at_level("WARNING", logger="asyncio"):
            for _ in range(8):
                tr.write(b"after")
        await wait_lost(server, pr, srv)
        return bytes(srv.data)

    got = run(loop, main())
    assert got == b"before"
    warnings = [r for r in caplog.records if r.getMessage() == "SSL connection is closed"]
    assert len(warnings) == 3


def test_tls_reading_resumes_over_a_large_backlog(loop, certs):
    """Records that piled up in the TLS layer while the app paused reading (more than one
    receive buffer's worth) arrive whole, in order, once it resumes."""
    data = payload(3 * MiB, seed=43)

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs)
        tr.pause_reading()
        srv.transport.write(data)
        ssl_protocol = tr._ssl_protocol
        for _ in range(500):
            await asyncio.sleep(0.01)
            if ssl_protocol._get_read_buffer_size() >= 256 * KiB:
                break
        piled = ssl_protocol._get_read_buffer_size()
        tr.resume_reading()
        await pr.wait_bytes(len(data))
        tr.close()
        await wait_lost(server, pr, srv)
        return piled, bytes(pr.data)

    piled, got = run(loop, main(), timeout=50)
    assert piled >= 256 * KiB
    assert digest(got) == digest(data)


def test_tls_protocol_is_native_on_ferroloop(ferro, certs):
    """On ferroloop both ssl= connections and start_tls() use the native TLS data path."""
    from ferroloop._ferroloop import SSLProtocolCore

    loop = ferro

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs)
        protocols = [tr._ssl_protocol, srv.transport._ssl_protocol]
        tr.close()
        await wait_lost(server, pr, srv)

        server, tr, pr, srv = await connected_pair(loop)
        upgrade = loop.create_task(
            loop.start_tls(srv.transport, srv, certs.server(), server_side=True)
        )
        tls_tr = await loop.start_tls(tr, pr, certs.client(), server_hostname=HOSTNAME)
        await upgrade
        protocols.append(tls_tr._ssl_protocol)
        tls_tr.close()
        await wait_lost(server, pr, srv)
        return protocols

    protocols = run(loop, main())
    assert len(protocols) == 3
    for protocol in protocols:
        assert isinstance(protocol, SSLProtocolCore)
        assert isinstance(protocol, asyncio.sslproto.SSLProtocol)


_SSLPROTO_UNIT_TESTS = """
import sys, unittest
from asyncio import sslproto
from ferroloop._sslproto import SSLProtocol
from test.test_asyncio import test_sslproto
sslproto.SSLProtocol = SSLProtocol
result = unittest.main(module=test_sslproto, argv=["test_sslproto"], exit=False).result
sys.exit(0 if result.wasSuccessful() and result.testsRun - len(result.skipped) >= 10 else 1)
"""


def test_cpython_sslproto_tests_pass_on_the_native_protocol():
    """CPython's own test_sslproto with asyncio's SSLProtocol replaced by ferroloop's: its unit
    tests drive the protocol directly (mock transports, fake loops), which no loop-level test
    reaches."""
    proc = subprocess.run(
        [sys.executable, "-c", _SSLPROTO_UNIT_TESTS], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_tls_protocols_are_collected_after_close(loop, certs):
    """Closed TLS connections leave nothing behind: the TLS protocols (which reference their
    transports, app protocols and loop, and are referenced back) are freed by the collector."""
    import gc
    import weakref

    async def main():
        refs = []
        for _ in range(5):
            server, tr, pr, srv = await tls_pair(loop, certs, lambda: EchoRecorder(loop))
            tr.write(b"ping")
            await pr.wait_bytes(4)
            refs += [weakref.ref(tr._ssl_protocol), weakref.ref(srv.transport._ssl_protocol)]
            tr.close()
            await wait_lost(server, pr, srv)
            del tr, pr, srv
        for _ in range(3):
            await asyncio.sleep(0)
        return refs

    refs = run(loop, main())
    gc.collect()
    assert len(refs) == 10
    assert [r for r in refs if r() is not None] == []


def test_tls_buffered_protocol_sees_close_notify(loop, certs):
    """A BufferedProtocol app gets the last bytes, then eof_received() and connection_lost(None),
    when the peer closes its TLS connection."""

    class Client(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(4 * KiB)
            self.got = bytearray()
            self.events = []
            self.done = loop.create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]

        def eof_received(self):
            self.events.append("eof")

        def connection_lost(self, exc):
            self.events.append("lost")
            self.done.set_result(exc)

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs, client_factory=Client)
        srv.transport.write(b"last words")
        srv.transport.close()
        exc = await pr.done
        await close_server(server)
        return exc, bytes(pr.got), pr.events

    exc, got, events = run(loop, main())
    assert exc is None
    assert got == b"last words"
    assert events == ["eof", "lost"]


def test_tls_random_traffic_both_ways_with_flow_control(loop, certs):
    """Seeded random traffic in both directions at once: pieces of 1 B to 100 KiB through
    write() and writelines(), small write-buffer limits (pause_writing/resume_writing), and the
    receiving side pausing and resuming its reading. Every byte arrives, in order."""
    import random

    rng = random.Random(20261127)

    def pieces(total_seed):
        r = random.Random(total_seed)
        out = []
        for _ in range(80):
            size = r.choice([1, 7, 100, 1500, 16 * KiB - 1, 16 * KiB + 1, 64 * KiB, 100 * KiB])
            out.append(payload(size, seed=r.randrange(1 << 30)))
        return out

    class Side(Recorder):
        def __init__(self, loop):
            super().__init__(loop)
            self.can_write = asyncio.Event()
            self.can_write.set()
            self.pauses = 0

        def pause_writing(self):
            self.pauses += 1
            self.can_write.clear()

        def resume_writing(self):
            self.can_write.set()

    async def send(tr, side, chunks):
        tr.set_write_buffer_limits(high=32 * KiB)
        i = 0
        while i < len(chunks):
            await side.can_write.wait()
            if rng.random() < 0.3 and i + 3 <= len(chunks):
                tr.writelines(chunks[i : i + 3])
                i += 3
            else:
                tr.write(chunks[i])
                i += 1
            if rng.random() < 0.2:
                await asyncio.sleep(0)

    async def flap(tr, stop):
        # Paused long enough at first for the writers to fill every buffer on the way.
        tr.pause_reading()
        await asyncio.sleep(0.1)
        tr.resume_reading()
        while not stop.is_set():
            tr.pause_reading()
            await asyncio.sleep(0.002)
            tr.resume_reading()
            await asyncio.sleep(0.003)

    async def main():
        server, tr, pr, srv = await tls_pair(loop, certs, lambda: Side(loop), lambda: Side(loop))
        for t in (tr, srv.transport):
            # Small kernel buffers, so that a paused reader backs the writer up quickly.
            sock = t.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * KiB)
        up, down = pieces(1), pieces(2)
        stop = asyncio.Event()
        flappers = [loop.create_task(flap(t, stop)) for t in (tr, srv.transport)]
        await asyncio.gather(send(tr, pr, up), send(srv.transport, srv, down))
        await asyncio.gather(srv.wait_bytes(sum(map(len, up))), pr.wait_bytes(sum(map(len, down))))
        stop.set()
        await asyncio.gather(*flappers)
        tr.close()
        await wait_lost(server, pr, srv)
        return up, down, bytes(srv.data), bytes(pr.data), pr.pauses + srv.pauses

    up, down, got_up, got_down, pauses = run(loop, main(), timeout=55)
    assert digest(got_up) == digest(b"".join(up))
    assert digest(got_down) == digest(b"".join(down))
    assert pauses > 0
