"""HTTP servers on each event loop, side by side: req/s, p99 latency, server CPU per request.

Each server runs as one process on 127.0.0.1, driven by wrk (``-t1``, keep-alive, ``-c``
connections) for a fixed number of requests after a warm-up; the server's user and kernel CPU
per request come from its ``/proc/PID/stat`` deltas over the measured requests. Rounds are
interleaved (every loop once per round, the order rotating) and each cell is the median over
the rounds. The servers:

- ``uvicorn_httptools``: a plain ASGI hello, ``uvicorn --http httptools``
- ``uvicorn_h11``: the same with ``--http h11``
- ``uvicorn_10k``: a 10 KiB body, httptools
- ``fastapi_json``: a FastAPI endpoint returning a small JSON object, httptools
- ``aiohttp_hello``: aiohttp's web server (``AppRunner`` + ``TCPSite``), no access log

Needs ``wrk`` (Debian package), uvicorn, httptools, h11; aiohttp and fastapi for their rows
(a missing one makes its row say so). zuvloop has wheels for Python 3.14+ only:

    python bench/servers.py                                  # 5 rounds, all servers
    python bench/servers.py --servers uvicorn_httptools --rounds 3 --loops uvloop,ferroloop
    bash tests/pythons.sh 3.14 --run sh -c \\
        'pip install -q zuvloop httptools fastapi && python bench/servers.py'
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from syscalls import (
    WRK_LUA,
    ServerProcess,
    cpu_ticks,
    fail,
    free_port,
    log,
    loop_version,
    uvicorn_cmd,
    wrk,
)

LOOPS = ("asyncio", "uvloop", "rloop", "zuvloop", "ferroloop")
BODY_10K = b"x" * 10240

FILES = {
    "hello.py": """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello, World!"})
""",
    "body10k.py": f"""\
BODY = b"x" * {len(BODY_10K)}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(
        {{
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"{len(BODY_10K)}")],
        }}
    )
    await send({{"type": "http.response.body", "body": BODY}})
""",
    "fastapi_app.py": """\
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root():
    return {"message": "Hello, World!", "items": [1, 2, 3]}
""",
    # The loop comes from a factory by name, as an application picks it with asyncio.Runner.
    "aiohttp_app.py": """\
import asyncio
import sys

from aiohttp import web

loop_name, port = sys.argv[1], int(sys.argv[2])


def factory():
    if loop_name == "asyncio":
        return asyncio.SelectorEventLoop()
    return __import__(loop_name).new_event_loop()


async def hello(request):
    return web.Response(text="Hello, World!")


async def main():
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


try:
    asyncio.Runner(loop_factory=factory).run(main())
except KeyboardInterrupt:
    pass
""",
}


def uvicorn_server(app: str, http: str = "httptools", needs: tuple[str, ...] = ()):
    def cmd(loop: str, app_dir: str, port: int) -> list[str]:
        return uvicorn_cmd(loop, app_dir, port, app=app, http=http)

    return cmd, ("uvicorn", http, *needs)


def aiohttp_cmd(loop: str, app_dir: str, port: int) -> list[str]:
    return [sys.executable, str(Path(app_dir, "aiohttp_app.py")), loop, str(port)]


# name -> (command builder, modules it needs)
SERVERS = {
    "uvicorn_httptools": uvicorn_server("hello:app"),
    "uvicorn_h11": uvicorn_server("hello:app", http="h11"),
    "uvicorn_10k": uvicorn_server("body10k:app"),
    "fastapi_json": uvicorn_server("fastapi_app:app", needs=("fastapi",)),
    "aiohttp_hello": (aiohttp_cmd, ("aiohttp",)),
}


@dataclass
class Cell:
    rps: list[float] = field(default_factory=list)
    p99_us: list[float] = field(default_factory=list)
    cpu_us: list[tuple[float, float]] = field(default_factory=list)  # user, kernel per request

    def med(self) -> tuple[float, float, float, float]:
        user = statistics.median(c[0] for c in self.cpu_us)
        kern = statistics.median(c[1] for c in self.cpu_us)
        return statistics.median(self.rps), statistics.median(self.p99_us), user, kern


def measure(server: str, loop: str, a: argparse.Namespace, app_dir: str, lua: str, cell: Cell):
    build, _ = SERVERS[server]
    port = free_port()
    with ServerProcess(build(loop, app_dir, port), port) as srv:
        srv.wait_ready()
        wrk(srv.url, a.warmup, a.connections, lua)
        tick = os.sysconf("SC_CLK_TCK")
        u0, s0 = cpu_ticks(srv.proc.pid)
        done, rps, p99 = wrk(srv.url, a.requests, a.connections, lua)
        u1, s1 = cpu_ticks(srv.proc.pid)
        if srv.proc.poll() is not None:
            raise RuntimeError(f"server died: {srv.stderr()}")
    scale = 1e6 / tick / done
    cell.rps.append(rps)
    cell.p99_us.append(p99)
    cell.cpu_us.append(((u1 - u0) * scale, (s1 - s0) * scale))


def table(server: str, cells: dict[str, Cell], versions: dict[str, str]) -> str:
    rows = [
        f"#### {server}\n",
        "| loop | req/s | p99 | CPU µs/req (user + kernel) "
        "| ferroloop req/s ÷ this | this CPU ÷ ferroloop |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    meds = {lp: c.med() for lp, c in cells.items() if c.rps}
    ferro = meds.get("ferroloop")
    for lp, (rps, p99, user, kern) in meds.items():
        if ferro and lp != "ferroloop":
            # >1: ferroloop serves more requests / spends less CPU per request.
            ratios = f"{ferro[0] / rps:.2f}x | {(user + kern) / (ferro[2] + ferro[3]):.2f}x"
        else:
            ratios = "| "
        rows.append(
            f"| {lp} {versions[lp]} | {rps / 1000:.1f}k | {p99:.0f} µs "
            f"| {user + kern:.1f} ({user:.1f} + {kern:.1f}) | {ratios} |"
        )
    return "\n".join(rows)


def importable(module: str) -> bool:
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, check=False
    )
    return proc.returncode == 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loops", default=",".join(LOOPS), help="comma-separated (default: all)")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated (default: all)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument("--requests", type=int, default=50_000, help="measured per round (50000)")
    p.add_argument("--warmup", type=int, default=5_000, help="requests before measuring (5000)")
    p.add_argument("-c", "--connections", type=int, default=10, help="keep-alive connections")
    a = p.parse_args()
    loops = [x.strip() for x in a.loops.split(",") if x.strip()]
    servers = [x.strip() for x in a.servers.split(",") if x.strip()]
    for x in servers:
        if x not in SERVERS:
            fail(f"unknown server {x!r}; known: {', '.join(SERVERS)}")
    if shutil.which("wrk") is None:
        fail("wrk not found (Debian: apt-get install wrk)")

    versions: dict[str, str] = {}
    missing: dict[str, str] = {}
    for lp in loops:
        ok, info = loop_version(lp)
        (versions if ok else missing)[lp] = info
    skipped = {}
    for x in servers:
        lacking = [m for m in SERVERS[x][1] if not importable(m)]
        if lacking:
            skipped[x] = f"needs {', '.join(lacking)} (pip install {' '.join(lacking)})"
    runnable = [x for x in servers if x not in skipped]
    cells = {x: {lp: Cell() for lp in versions} for x in runnable}
    failed: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in FILES.items():
            Path(tmp, name).write_text(text)
        lua = str(Path(tmp, "stop.lua"))
        Path(lua).write_text(WRK_LUA)
        order = list(versions)
        for rnd in range(a.rounds):
            for x in runnable:
                for lp in order[rnd % len(order) :] + order[: rnd % len(order)]:
                    if (x, lp) in failed:
                        continue
                    log(f"round {rnd + 1}: {x} on {lp}")
                    try:
                        measure(x, lp, a, tmp, lua, cells[x][lp])
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        log(f"  failed: {exc}")
                        failed[x, lp] = str(exc).splitlines()[0]

    print(
        f"Python {sys.version.split()[0]}, wrk -t1 -c{a.connections} keep-alive, "
        f"{a.requests} requests per round after {a.warmup}, median of {a.rounds} interleaved "
        f"rounds; {time.strftime('%Y-%m-%d')}\n"
    )
    for x in runnable:
        print(table(x, cells[x], versions))
        for (fx, lp), why in failed.items():
            if fx == x:
                print(f"\n{lp}: failed ({why})")
        print()
    for x, why in skipped.items():
        print(f"{x}: n/a ({why})\n")
    for lp, why in missing.items():
        print(f"{lp}: n/a ({why})")


if __name__ == "__main__":
    main()
