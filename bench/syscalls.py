"""Syscalls and CPU per request of a uvicorn server, one event loop at a time.

A plain ASGI hello (``uvicorn app:app --loop X --http httptools --no-access-log``, one worker)
on 127.0.0.1, driven by wrk with keep-alive connections for a fixed number of requests:

1. warm-up: ``--warmup`` requests, not measured;
2. ``strace -f -c -p PID`` attached to the server for exactly ``--requests`` requests: the
   syscalls per request by kind;
3. ``--cpu-rounds`` runs of ``--cpu-requests`` requests without strace (ptrace makes every
   syscall cost tens of µs, so CPU under strace means nothing): user and kernel CPU per request
   from the server's ``/proc/PID/stat`` (utime, stime) deltas.

Prints a markdown table on stdout (progress on stderr). Needs ``strace``, ``wrk`` (Debian
packages of those names), uvicorn and httptools; a loop that cannot be imported shows ``n/a``
with the reason.

    python bench/syscalls.py                              # asyncio uvloop zuvloop ferroloop, ~1 min
    python bench/syscalls.py --loops uvloop,ferroloop --requests 50000
    python bench/syscalls.py --connections 1              # one request in flight: no batching
    python bench/syscalls.py --detail                     # also every syscall name per loop

On Python 3.14 (zuvloop has wheels for 3.14+ only), from the project's sid chroot:

    bash tests/pythons.sh 3.14 --run sh -c \\
        'pip install -q zuvloop httptools && python bench/syscalls.py'
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPS = ("asyncio", "uvloop", "zuvloop", "ferroloop")
# uvicorn's own names where it has one, else a loop factory by import string (uvicorn >= 0.36).
LOOP_SPECS = {
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "zuvloop": "zuvloop:new_event_loop",
    "ferroloop": "ferroloop:new_event_loop",
}

APP = """\
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
"""

# wrk runs for a duration, not a request count: this script stops its (single) thread once
# that many responses arrived and says so on stdout. wrk's main thread would still sleep out
# its -d, so wrk() then interrupts it with SIGINT (which makes wrk print its report at once).
# The -d given to wrk is only a bound for a server that stalls.
WRK_LUA = """\
local limit, n = 0, 0
function init(args) limit = tonumber(args[1]) end
function response(status, headers, body)
  if status ~= 200 then error("status " .. status) end
  n = n + 1
  if n == limit then
    io.write("STOPPED\\n")
    io.flush()
    wrk.thread:stop()
  end
end
"""

# The columns: what a request's data path costs, by kind. libuv reads and writes sockets with
# read/write/writev, asyncio with recv/send; both land in the same column. A write to an
# eventfd or the self-pipe (a wake-up) would count as a send too: none happens in this
# single-threaded server, which the detail listing (--detail) lets one check.
KINDS: dict[str, tuple[str, ...]] = {
    "recv": ("recvfrom", "recv", "recvmsg", "read", "readv"),
    "send": ("sendto", "send", "sendmsg", "write", "writev"),
    "epoll_wait": ("epoll_wait", "epoll_pwait", "epoll_pwait2"),
    "epoll_ctl": ("epoll_ctl",),
}


def fail(msg: str) -> None:
    print(f"syscalls.py: {msg}", file=sys.stderr)
    raise SystemExit(2)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loop_version(name: str) -> tuple[bool, str]:
    """(importable, version-or-reason), checked in a subprocess so nothing loads here."""
    code = (
        "import sys, importlib.metadata as m\n"
        f"name = {name!r}\n"
        "if name == 'asyncio':\n"
        "    print('CPython ' + sys.version.split()[0])\n"
        "else:\n"
        "    mod = __import__(name)\n"
        "    mod.new_event_loop().close()\n"
        "    print(m.version(name))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return False, lines[-1] if lines else f"exit code {proc.returncode}"
    return True, proc.stdout.strip()


def free_port() -> int:
    # A port the kernel just handed out and nobody listens on: uvicorn binds it right after.
    # (uvicorn's --fd would avoid the race, but it wraps the socket as AF_UNIX.)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of a process in clock ticks, all its threads included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]), int(fields[12])


@dataclass
class Result:
    loop: str
    requests: int = 0  # of the straced run
    calls: dict[str, int] = field(default_factory=dict)  # syscall name -> count
    cpu: list[tuple[float, float, float]] = field(default_factory=list)  # user, sys µs; req/s

    def per_request(self, names: tuple[str, ...]) -> float:
        return sum(self.calls.get(n, 0) for n in names) / self.requests

    def total(self) -> float:
        return sum(self.calls.values()) / self.requests


class ServerProcess:
    """One HTTP server process listening on 127.0.0.1:`port`; the context manager stops it
    with SIGINT (uvicorn's and aiohttp's graceful stop), then SIGKILL after 5 s."""

    def __init__(self, cmd: list[str], port: int) -> None:
        self.port = port
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err
        )
        self.url = f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.stderr()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server not listening after {timeout:g} s")

    def stderr(self) -> str:
        self.err.seek(0)
        lines = self.err.read().strip().splitlines()
        return lines[-1] if lines else "(no stderr)"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def uvicorn_cmd(loop: str, app_dir: str, port: int, app: str = "app:app", http: str = "httptools"):
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        app_dir,
        "--loop",
        LOOP_SPECS[loop],
        "--http",
        http,
        "--no-access-log",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


class Uvicorn(ServerProcess):
    """The hello app under uvicorn with httptools."""

    def __init__(self, loop: str, app_dir: str) -> None:
        port = free_port()
        super().__init__(uvicorn_cmd(loop, app_dir, port), port)


def wrk(url: str, requests: int, connections: int, lua: str) -> tuple[int, float, float]:
    """(responses, req/s, p99 latency in µs) of a wrk run stopped after `requests`
    responses."""
    # The bound on the run: a few hundred requests a second is slower than any loop under strace.
    bound = max(10, requests // 300)
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{bound}s", "--latency", "-s", lua, url]
    cmd += ["--", str(requests)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    # wrk ends by itself after -d at the latest, so these reads cannot block for longer.
    head = []
    for line in proc.stdout:
        if line.strip() == "STOPPED":
            proc.send_signal(signal.SIGINT)
            break
        head.append(line)
    try:
        stdout, stderr = proc.communicate(timeout=bound + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError("wrk did not finish") from None
    stdout = "".join(head) + stdout
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exit code {proc.returncode}: {stderr.strip()}")
    total = re.search(r"^\s*(\d+) requests in ", stdout, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", stdout, re.M)
    if not (total and rps):
        raise RuntimeError(f"unexpected wrk output:\n{stdout}{stderr}")
    if errors := re.search(r"Socket errors: .*|Non-2xx or 3xx responses: \d+", stdout):
        raise RuntimeError(f"wrk: {errors[0]}")
    if int(total[1]) < requests:
        raise RuntimeError(f"wrk stopped after {total[1]} of {requests} requests")
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\b", stdout, re.M)
    if not p99:
        raise RuntimeError(f"no latency distribution in wrk's output:\n{stdout}")
    p99_us = float(p99[1]) * {"us": 1, "ms": 1e3, "s": 1e6}[p99[2]]
    return int(total[1]), float(rps[1]), p99_us


def parse_strace_summary(text: str) -> dict[str, int]:
    """strace -c's table: % time, seconds, usecs/call, calls, [errors,] syscall."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[0][0].isdigit() or parts[-1] == "total":
            continue
        calls[parts[-1]] = int(parts[3])
    if not calls:
        raise RuntimeError(f"no strace summary in:\n{text}")
    return calls


def straced(srv: Uvicorn, requests: int, connections: int, lua: str) -> tuple[int, dict]:
    with tempfile.NamedTemporaryFile(mode="w+", suffix=".strace") as out:
        # -f with -p attaches every thread of the server, not only its main one.
        st = subprocess.Popen(
            ["strace", "-f", "-c", "-o", out.name, "-p", str(srv.proc.pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert st.stderr is not None
        # strace says "Process N attached" (with N threads, when there are several) once it
        # traces them all: the load starts then. select() bounds the wait for a strace that
        # can neither attach nor exit (readline alone could block forever).
        ready, _, _ = select.select([st.stderr], [], [], 10)
        line = st.stderr.readline() if ready else ""
        if "attached" not in line:
            st.kill()
            raise RuntimeError(f"strace did not attach: {line.strip() or 'no output in 10 s'}")
        try:
            done, _, _ = wrk(srv.url, requests, connections, lua)
        finally:
            st.send_signal(signal.SIGINT)  # detach and write the summary
            st.wait(30)
        return done, parse_strace_summary(Path(out.name).read_text())


def measure(loop: str, a: argparse.Namespace, app_dir: str, lua: str, res: Result) -> None:
    with Uvicorn(loop, app_dir) as srv:
        srv.wait_ready()
        wrk(srv.url, a.warmup, a.connections, lua)
        if not res.calls:
            res.requests, res.calls = straced(srv, a.requests, a.connections, lua)
        tick = os.sysconf("SC_CLK_TCK")
        u0, s0 = cpu_ticks(srv.proc.pid)
        done, rps, _ = wrk(srv.url, a.cpu_requests, a.connections, lua)
        u1, s1 = cpu_ticks(srv.proc.pid)
        scale = 1e6 / tick / done
        res.cpu.append(((u1 - u0) * scale, (s1 - s0) * scale, rps))
        if srv.proc.poll() is not None:
            raise RuntimeError(f"uvicorn died: {srv.stderr()}")


def fmt(x: float) -> str:
    return f"{x:.2f}"


def table(results: list[Result], versions: dict[str, str]) -> str:
    head = (
        "| loop | recv | send | epoll_wait | epoll_ctl | other | **total** "
        "| user µs/req | kernel µs/req | req/s |"
    )
    rows = [head, "|---|" + "---:|" * 9]
    for r in results:
        named = sum((names for names in KINDS.values()), ())
        other = r.total() - r.per_request(named)
        user = statistics.median(c[0] for c in r.cpu)
        kern = statistics.median(c[1] for c in r.cpu)
        rps = " / ".join(f"{c[2] / 1000:.1f}k" for c in r.cpu)
        rows.append(
            f"| {r.loop} {versions[r.loop]} | "
            + " | ".join(fmt(r.per_request(KINDS[k])) for k in KINDS)
            + f" | {fmt(other)} | **{fmt(r.total())}** | {user:.1f} | {kern:.1f} | {rps} |"
        )
    return "\n".join(rows)


def detail(results: list[Result]) -> str:
    lines = []
    for r in results:
        top = sorted(r.calls.items(), key=lambda kv: -kv[1])
        per = ", ".join(f"{name} {n / r.requests:.3f}" for name, n in top if n / r.requests >= 1e-3)
        lines.append(f"- {r.loop}: {per}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loops", default=",".join(LOOPS), help="comma-separated (default: all)")
    p.add_argument("--requests", type=int, default=20_000, help="straced requests (20000)")
    p.add_argument("--cpu-requests", type=int, default=100_000, help="per CPU run (100000)")
    p.add_argument("--cpu-rounds", type=int, default=2, help="interleaved CPU runs (2)")
    p.add_argument("--warmup", type=int, default=5_000, help="requests before measuring (5000)")
    p.add_argument("-c", "--connections", type=int, default=10, help="keep-alive connections")
    p.add_argument("--detail", action="store_true", help="list every syscall per request")
    a = p.parse_args()
    loops = [name.strip() for name in a.loops.split(",") if name.strip()]
    for name in loops:
        if name not in LOOP_SPECS:
            fail(f"unknown loop {name!r}; expected some of {', '.join(LOOPS)}")
    for tool in ("strace", "wrk"):
        if shutil.which(tool) is None:
            fail(f"{tool} not found (Debian: apt-get install {tool})")
    for mod in ("uvicorn", "httptools"):
        if subprocess.run([sys.executable, "-c", f"import {mod}"], check=False).returncode:
            fail(f"cannot import {mod} (pip install {mod})")

    versions: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name in loops:
        ok, info = loop_version(name)
        (versions if ok else missing)[name] = info
    uvicorn_v = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('uvicorn'))"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    results = {name: Result(name) for name in versions}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "app.py").write_text(APP)
        lua = str(Path(tmp, "stop.lua"))
        Path(lua).write_text(WRK_LUA)
        # Interleaved rounds, the loop order rotating: drift on this shared machine then hits
        # every loop alike. The straced run happens in each loop's first round.
        order = list(results)
        for rnd in range(a.cpu_rounds):
            for name in order[rnd % len(order) :] + order[: rnd % len(order)]:
                if name in missing:
                    continue
                log(f"round {rnd + 1}: {name}")
                try:
                    measure(name, a, tmp, lua, results[name])
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    # One loop's failure (a crash, strace refused by ptrace rules) should not
                    # cost the other loops' numbers: report it below the table instead.
                    log(f"  {name} failed: {exc}")
                    missing[name] = f"failed: {str(exc).splitlines()[0]}"
        for name in missing:
            results.pop(name, None)

    print(
        f"Python {sys.version.split()[0]}, uvicorn {uvicorn_v}"
        f" --http httptools, wrk -t1 -c{a.connections} keep-alive, {a.requests} requests"
        f" under strace -f -c, CPU: median of {a.cpu_rounds} x {a.cpu_requests} requests"
        f" without strace; {time.strftime('%Y-%m-%d')}\n"
    )
    print(table(list(results.values()), versions))
    for name, why in missing.items():
        print(f"\n{name}: n/a ({why})")
    if a.detail:
        print("\nEvery syscall per request:\n")
        print(detail(list(results.values())))


if __name__ == "__main__":
    main()
