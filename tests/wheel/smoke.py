"""What a user does first with a freshly installed wheel: import it, run a coroutine, a timer
and a TCP echo on 127.0.0.1. Run by tests/wheel/build.sh from outside the source tree, so the
import can only find the installed wheel."""

from __future__ import annotations

import asyncio
import sys
import sysconfig
from pathlib import Path

import ferroloop


async def echo_once(payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, ferroloop.Loop), type(loop)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(len(payload)))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async with asyncio.timeout(10):
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    return echoed


async def timer() -> float:
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    loop.call_later(0.01, fired.set_result, loop.time())
    return await fired


def main() -> int:
    where = Path(ferroloop.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    if where.parent != site:
        print(f"smoke: ferroloop imported from {where}, not from {site}", file=sys.stderr)
        return 1
    payload = b"ferroloop wheel smoke test " * 100
    assert ferroloop.run(echo_once(payload)) == payload
    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
        assert runner.run(timer()) > 0
    version = sys.version.split()[0]
    print(f"smoke: ok (Python {version}, ferroloop {ferroloop.__version__} from {where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
