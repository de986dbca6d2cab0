"""The contextvars context protocol callbacks run in, as the running Python's asyncio runs them.

Python 3.15 gives each transport a context (a copy of the caller's for create_connection, a copy
of the server's per accepted connection) and runs every protocol callback in it, so a value set
in connection_made is seen by data_received and connection_lost. Before 3.15 each callback gets
its own copy: connection_made's writes stay there, the reads share the reader's context.
Both twins must show the running version's behaviour.
"""

import asyncio
import contextvars
import socket

import pytest
from net_helpers import close_server, run
from versions import TRANSPORT_CONTEXT

pytestmark = pytest.mark.timeout(30)

cvar = contextvars.ContextVar("cvar", default="unset")


class ContextProtocol(asyncio.Protocol):
    """Records the variable at each callback, then sets it to the callback's name."""

    def __init__(self, loop, tag=""):
        self.seen = {}
        self.tag = tag
        self.transport = None
        self.done = loop.create_future()

    def _note(self, event):
        self.seen.setdefault(event, cvar.get())
        cvar.set(f"{event}{self.tag}")

    def connection_made(self, transport):
        self.transport = transport
        self._note("made")

    def data_received(self, data):
        self._note("data")

    def eof_received(self):
        self._note("eof")

    def connection_lost(self, exc):
        self._note("lost")
        if not self.done.done():
            self.done.set_result(None)


def test_client_protocol_callbacks_context(loop):
    async def main():
        async def handle(reader, writer):
            writer.write(b"hello")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cvar.set("caller")
        tr, pr = await loop.create_connection(lambda: ContextProtocol(loop), "127.0.0.1", port)
        after_connect = cvar.get()
        await pr.done
        await close_server(server)
        return after_connect, cvar.get(), pr.seen

    after_connect, at_end, seen = run(loop, main())
    # The callbacks' writes never reach the task that connected.
    assert after_connect == at_end == "caller"
    if TRANSPORT_CONTEXT:
        assert seen == {"made": "caller", "data": "made", "eof": "data", "lost": "eof"}
    else:
        assert seen == {"made": "caller", "data": "caller", "eof": "data", "lost": "eof"}


def test_server_protocol_callbacks_context_per_connection(loop):
    protocols = []

    def factory():
        protocols.append(ContextProtocol(loop, tag=str(len(protocols))))
        return protocols[-1]

    async def main():
        cvar.set("server")
        server = await loop.create_server(factory, "127.0.0.1", 0)
        cvar.set("after create_server")
        port = server.sockets[0].getsockname()[1]
        for n in range(2):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(b"x" * (n + 1))
                c.shutdown(socket.SHUT_WR)
                await asyncio.wait_for(_until(lambda n=n: len(protocols) > n), 10)
                await protocols[n].done
        await close_server(server)

    run(loop, main())
    for n, pr in enumerate(protocols):
        if TRANSPORT_CONTEXT:
            # A copy of the server's context per connection: nothing leaks between them.
            assert pr.seen == {
                "made": "server",
                "data": f"made{n}",
                "eof": f"data{n}",
                "lost": f"eof{n}",
            }
        else:
            assert pr.seen == {
                "made": "server",
                "data": "server",
                "eof": f"data{n}",
                "lost": f"eof{n}",
            }


def test_connect_accepted_socket_context(loop):
    async def main():
        a, b = socket.socketpair()
        cvar.set("caller")
        tr, pr = await loop.connect_accepted_socket(lambda: ContextProtocol(loop), a)
        b.sendall(b"ping")
        b.shutdown(socket.SHUT_WR)
        await pr.done
        b.close()
        return pr.seen

    seen = run(loop, main())
    if TRANSPORT_CONTEXT:
        assert seen == {"made": "caller", "data": "made", "eof": "data", "lost": "eof"}
    else:
        assert seen == {"made": "caller", "data": "caller", "eof": "data", "lost": "eof"}


def test_write_from_another_task_keeps_connection_lost_in_transport_context(loop):
    """A close() from another task: 3.15 still runs connection_lost in the transport's
    context; before, it runs in a copy of the closing task's."""

    async def main():
        a, b = socket.socketpair()
        cvar.set("caller")
        tr, pr = await loop.connect_accepted_socket(lambda: ContextProtocol(loop), a)
        await asyncio.sleep(0)

        async def closer():
            cvar.set("closer")
            tr.close()

        await loop.create_task(closer())
        await pr.done
        b.close()
        return pr.seen["lost"]

    assert run(loop, main()) == ("made" if TRANSPORT_CONTEXT else "closer")


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.001)
