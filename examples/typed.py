"""Every way to start ferroloop, in code that `mypy --strict` and `pyright --strict` accept
(`make test-types` checks it): ferroloop's values go where asyncio's types are expected.

Run it with ``python examples/typed.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket

import ferroloop

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def echo_once(payload: bytes) -> bytes:
    """A TCP echo over loopback: the server and the client on the same loop."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(len(payload)))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    sock: socket.socket = server.sockets[0]
    host, port = sock.getsockname()[:2]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    echoed = await reader.readexactly(len(payload))
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return echoed


async def timers() -> list[str]:
    loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
    fired: list[str] = []
    done: asyncio.Future[None] = loop.create_future()

    def note(what: str) -> None:
        fired.append(f"{what} (request {request_id.get()})")

    ctx = contextvars.copy_context()
    ctx.run(request_id.set, "42")
    soon: asyncio.Handle = loop.call_soon(note, "call_soon", context=ctx)
    later: asyncio.TimerHandle = loop.call_later(0.01, note, "call_later")
    cancelled: asyncio.TimerHandle = loop.call_at(loop.time() + 0.01, note, "never")
    cancelled.cancel()
    loop.call_later(0.02, done.set_result, None)
    await done
    assert not soon.cancelled() and later.when() <= loop.time() and cancelled.cancelled()
    return fired


async def main() -> str:
    task: asyncio.Task[bytes] = asyncio.create_task(echo_once(b"hello"), name="echo")
    return f"{type(asyncio.get_running_loop()).__name__}: {await task!r}"


def use_run() -> str:
    return ferroloop.run(main())  # like asyncio.run(main())


def use_runner() -> list[str]:
    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
        return runner.run(timers())


def use_new_event_loop() -> bytes:
    loop: asyncio.AbstractEventLoop = ferroloop.new_event_loop()
    try:
        return loop.run_until_complete(echo_once(b"bye"))
    finally:
        loop.close()


def use_install() -> str:
    ferroloop.install()  # asyncio.run, asyncio.Runner and asyncio.new_event_loop use ferroloop
    return asyncio.run(main())


if __name__ == "__main__":
    print("ferroloop.run:", use_run())
    print("asyncio.Runner(loop_factory=...):", use_runner())
    print("ferroloop.new_event_loop:", use_new_event_loop())
    print("ferroloop.install + asyncio.run:", use_install())
