"""Side-by-side network benchmarks: stock asyncio vs uvloop vs rloop vs ferroloop.

Echo servers (sock_* methods, streams, a plain Protocol) and an HTTP/1.1 keep-alive server
(Protocol + httptools), each in a fresh server process per (benchmark, loop, round)
(bench/net_servers.py), driven by a Rust load generator (bench/loadgen) or wrk. Rounds are
interleaved across loops. Prints a markdown table of median requests/s and p99 latency, with
the best peer (the fastest loop other than ferroloop) per row and ferroloop's ratio against it.

    python bench/net.py                      # full run, 5 rounds (~4 min)
    python bench/net.py --quick              # smoke run: 1 round (~40 s)
    python bench/net.py --bench protocol,http --loops uvloop,ferroloop --rounds 5
    python bench/net.py --unix               # Unix sockets instead of TCP
    python bench/net.py --json bench/results/net.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# bench/ is sys.path[0] when run as `python bench/net.py`.
from benchmarks import LOOPS
from run import FERRO, Unsupported, best_peer, check_loop, fmt_num

HERE = Path(__file__).resolve().parent
SERVER = HERE / "net_servers.py"
LOADGEN_DIR = HERE / "loadgen"
LOADGEN = LOADGEN_DIR / "target" / "release" / "loadgen"
HTTP_BODY = "Hello, World!"  # what net_servers.py's http server answers
# A client (loadgen/wrk) using this much of its core is (close to) the bottleneck.
CLIENT_BOUND_PCT = 90
# Closed loop, 10 requests in flight: the server or the client should be busy all the time.
# When neither reaches this much CPU, something else had the cores (another job on this
# shared machine) or the loop sat idle with work pending (a missed wake-up): the run is
# "starved", reported, and retried.
STARVED_PCT = 80


def starved(res: dict) -> bool:
    server = res["server_cpu_pct"]
    return server is not None and server < STARVED_PCT and res["client_cpu_pct"] < STARVED_PCT


@dataclass(frozen=True)
class NetBench:
    server: str  # a net_servers.SERVERS name
    size: int  # echo message size in bytes; 0 for http
    what: str  # one line for --help


def _echo(server: str, what: str) -> dict[str, NetBench]:
    return {
        f"echo_{server}_{label}": NetBench(server, size, f"{what}, {size // 1024} KiB messages")
        for label, size in (("1k", 1024), ("10k", 10 * 1024), ("100k", 100 * 1024))
    }


BENCHMARKS: dict[str, NetBench] = {
    **_echo("sock", "sock_accept/sock_recv/sock_sendall echo"),
    **_echo("streams", "start_server + reader.read/writer.write/drain echo"),
    **_echo("protocol", "Protocol.data_received -> transport.write echo"),
    "http_hello": NetBench("http", 0, "HTTP/1.1 keep-alive GET, Protocol + httptools"),
}


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


Setup = Callable[[], None] | None


def child_setup(cpu: int | None, nice: int) -> Setup:
    """preexec_fn pinning the child to one CPU (None: any) and renicing it (0: leave it)."""
    if cpu is None and nice == 0:
        return None

    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        if nice:
            os.nice(nice)

    return setup


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(utime, stime) of a live process in seconds, from /proc (None if unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class Server:
    """A net_servers.py process; the context manager kills it and collects its stderr."""

    def __init__(self, server: str, loop: str, addr: str, setup: Setup) -> None:
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), server, loop, "--addr", addr],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            preexec_fn=setup,
        )
        self.addr = ""

    def wait_ready(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            if self.proc.poll() is None:
                raise RuntimeError(f"server not ready after {timeout:g} s")
            raise RuntimeError(f"server exited with {self.proc.returncode}: {self.stderr_tail()}")
        ready = json.loads(line)
        if "unsupported" in ready:
            raise Unsupported(ready["unsupported"], ready["detail"])
        self.addr = ready["addr"]
        return self.addr

    def stderr_text(self) -> str:
        self.err.seek(0)
        return self.err.read().strip()

    def stderr_tail(self) -> str:
        lines = self.stderr_text().splitlines()
        return lines[-1] if lines else "(no stderr)"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()
        if self.addr.startswith("unix:"):
            Path(self.addr[len("unix:") :]).unlink(missing_ok=True)


def run_loadgen(args: list[str], setup: Setup, timeout: float) -> dict:
    try:
        proc = subprocess.run(
            [str(LOADGEN), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=setup,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"loadgen timed out after {timeout:g} s") from None
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"loadgen exit code {proc.returncode}: {proc.stderr.strip()}")
    out = json.loads(lines[-1])
    if "fatal" in out:
        raise RuntimeError(f"loadgen: {out['fatal']}")
    return out


_WRK_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(text: str) -> dict:
    """The numbers we use from `wrk --latency` output, in loadgen's JSON shape."""

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            raise RuntimeError(f"no {pct}% latency in wrk output:\n{text}")
        return float(m[1]) * _WRK_UNITS[m[2]]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if not (rps and total):
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    errors = 0
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        errors += sum(int(g) for g in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors += int(m[1])
    return {
        "requests": int(total[1]),
        "rps": float(rps[1]),
        "p50_us": latency("50"),
        "p99_us": latency("99"),
        "errors": errors,
        "stalled": 0,
        "error_samples": [f"wrk reported {errors} errors"] if errors else [],
    }


def run_wrk(url: str, connections: int, seconds: int, setup: Setup, timeout: float) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=setup,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exit code {proc.returncode}: {proc.stderr.strip()}")
    return parse_wrk(proc.stdout)


@dataclass
class Opts:
    duration: float
    warmup: float
    connections: int
    unix: bool
    http_client: str  # "wrk" or "loadgen"
    server_setup: Setup
    client_setup: Setup
    timeout: float


def run_one(bench: str, loop: str, o: Opts) -> dict:
    """One server process, one load run; raises RuntimeError on any failure."""
    b = BENCHMARKS[bench]
    addr = "tcp:127.0.0.1:0"
    if o.unix:
        addr = f"unix:{tempfile.gettempdir()}/ferroloop-bench-{os.getpid()}.sock"
    with Server(b.server, loop, addr, o.server_setup) as srv:
        addr = srv.wait_ready(timeout=30)
        cpu0 = cpu_seconds(srv.proc.pid)
        # The clients are the only children reaped during the run (the server is reaped after),
        # so the change in RUSAGE_CHILDREN is their CPU time.
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        limit = o.warmup + o.duration + o.timeout
        common = ["--addr", addr, "-c", str(o.connections)]
        if b.server != "http":
            common += ["--size", str(b.size)]
            out = run_loadgen(
                [*common, "-d", str(o.duration), "-w", str(o.warmup)], o.client_setup, limit
            )
        else:
            common += ["--mode", "http", "--expect-body", HTTP_BODY]
            if o.http_client == "loadgen":
                out = run_loadgen(
                    [*common, "-d", str(o.duration), "-w", str(o.warmup)], o.client_setup, limit
                )
            else:
                # wrk has no warm-up of its own: warm the server with loadgen's HTTP mode (which
                # also checks the responses), then measure with wrk. wrk takes whole seconds.
                if o.warmup > 0:
                    warm = run_loadgen(
                        [*common, "-d", str(o.warmup), "-w", "0"], o.client_setup, limit
                    )
                    if warm["errors"]:
                        raise RuntimeError(f"warm-up errors: {warm['error_samples']}")
                url = "http://" + addr.removeprefix("tcp:") + "/"
                secs = max(1, math.ceil(o.duration))
                out = run_wrk(url, o.connections, secs, o.client_setup, secs + o.timeout)
        elapsed = time.monotonic() - t0
        cpu1 = cpu_seconds(srv.proc.pid)
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if srv.proc.poll() is not None:
            raise RuntimeError(f"server died (exit {srv.proc.returncode}): {srv.stderr_tail()}")
        if out["errors"] or out["stalled"]:
            raise RuntimeError(
                f"{out['errors']} errors, {out['stalled']} stalled requests;"
                f" {'; '.join(out['error_samples'])}; server stderr: {srv.stderr_tail()}"
            )
        if out["requests"] == 0:
            raise RuntimeError(f"no request completed; server stderr: {srv.stderr_tail()}")
        stderr = srv.stderr_text()
        if stderr:
            raise RuntimeError(f"server wrote to stderr: {stderr.splitlines()[-1]}")
        # CPU use over the whole load run (warm-up included), in % of one core. The server at
        # ~100% is the bottleneck, as intended; the client near 100% means the load generator
        # is (on loopback much of it is kernel time: a send runs the receiver's TCP input too).
        cpu = kernel = None
        if cpu0 is not None and cpu1 is not None:
            cpu = (sum(cpu1) - sum(cpu0)) / elapsed * 100
            kernel = (cpu1[1] - cpu0[1]) / elapsed * 100
        client_cpu = (
            (children1.ru_utime - children0.ru_utime + children1.ru_stime - children0.ru_stime)
            / elapsed
            * 100
        )
        return {
            "rps": out["rps"],
            "p50_us": out["p50_us"],
            "p99_us": out["p99_us"],
            "requests": out["requests"],
            "server_cpu_pct": cpu,
            # The kernel's share of it: on loopback every loop makes the same syscalls per request
            # (one recv, one send, a tenth of an epoll_wait), and a send also runs the peer's TCP
            # input, so this part is the same whichever loop serves.
            "server_kernel_pct": kernel,
            "client_cpu_pct": client_cpu,
        }


# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------


def build_loadgen() -> None:
    """cargo build --release (incremental: a no-op when up to date)."""
    if not shutil.which("cargo"):
        if LOADGEN.exists():
            return
        sys.exit("bench/loadgen is not built and cargo is not on PATH")
    print("building bench/loadgen (cargo build --release)...", file=sys.stderr)
    proc = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=LOADGEN_DIR, check=False)
    if proc.returncode != 0:
        sys.exit("cargo build of bench/loadgen failed")


def select_benches(spec: str | None) -> list[str]:
    if not spec:
        return list(BENCHMARKS)
    chosen: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        matches = [part] if part in BENCHMARKS else [b for b in BENCHMARKS if part in b]
        if not matches:
            sys.exit(f"no benchmark matches {part!r}; known: {', '.join(BENCHMARKS)}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def fmt_rate(v: float) -> str:
    if v >= 1e6:
        return f"{fmt_num(v / 1e6)}M"
    if v >= 1e3:
        return f"{fmt_num(v / 1e3)}k"
    return fmt_num(v)


def fmt_us(v: float) -> str:
    return f"{fmt_num(v / 1000)} ms" if v >= 1000 else f"{fmt_num(v)} µs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 5; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round")
    p.add_argument(
        "--bench",
        help="comma-separated benchmark names (or substrings); known:\n  "
        + "\n  ".join(f"{k:<20} {v.what}" for k, v in BENCHMARKS.items()),
    )
    p.add_argument("--loops", default=",".join(LOOPS), help=f"default {','.join(LOOPS)}")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="measured seconds per run (default 1); wrk rounds it up to whole seconds",
    )
    p.add_argument(
        "--warmup", type=float, default=None, help="untimed seconds first (default 0.3; 0.2 quick)"
    )
    p.add_argument("--connections", type=int, default=10, help="concurrent connections (10)")
    p.add_argument("--unix", action="store_true", help="Unix sockets instead of TCP loopback")
    p.add_argument(
        "--http-client",
        choices=("auto", "wrk", "loadgen"),
        default="auto",
        help="client for http_hello: wrk if installed (auto), or loadgen's HTTP mode",
    )
    p.add_argument(
        "--retries", type=int, default=2, help="reruns of a starved run (default 2), see README"
    )
    p.add_argument(
        "--nice",
        type=int,
        default=None,
        help="niceness increment for server and client (default -10 as root, else 0)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin server/client to CPUs")
    p.add_argument("--timeout", type=float, default=30.0, help="slack per run beyond its length")
    p.add_argument("--json", metavar="PATH", help="also write all raw results as JSON")
    args = p.parse_args(argv)

    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    duration = args.duration if args.duration is not None else 1.0
    warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 0.3)
    if rounds < 1 or duration <= 0 or warmup < 0 or args.connections < 1 or args.retries < 0:
        p.error(
            "need --rounds >= 1, --duration > 0, --warmup >= 0, --connections >= 1, --retries >= 0"
        )
    benches = select_benches(args.bench)
    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    for name in loops:
        if name not in LOOPS:
            p.error(f"unknown loop {name!r}; known: {', '.join(LOOPS)}")

    http_client = args.http_client
    if http_client == "auto":
        http_client = "wrk" if shutil.which("wrk") else "loadgen"
    if args.unix and http_client == "wrk":
        http_client = "loadgen"  # wrk cannot connect to a Unix socket
    if http_client == "wrk" and not shutil.which("wrk"):
        p.error("wrk is not installed (apt-get install wrk), use --http-client loadgen")

    # Server on the first allowed CPU, client on the second: the two never compete for a
    # core or migrate, which steadies the numbers on a 2-core machine. Kernel work for
    # loopback sends runs on the sender's CPU either way.
    cpus = sorted(os.sched_getaffinity(0))
    pinned = not args.no_pin and len(cpus) >= 2
    server_cpu, client_cpu = (cpus[0], cpus[1]) if pinned else (None, None)
    # Raised priority for both processes: on this shared machine other jobs (test suites)
    # come and go, and at nice 0 they take whole time slices from the server or the client
    # (runs with p99 of 4-10 ms and both processes half idle). Only root may lower niceness.
    nice = args.nice if args.nice is not None else (-10 if os.geteuid() == 0 else 0)
    if nice < 0 and os.geteuid() != 0:
        p.error("a negative --nice needs root")
    o = Opts(
        duration,
        warmup,
        args.connections,
        args.unix,
        http_client,
        child_setup(server_cpu, nice),
        child_setup(client_cpu, nice),
        args.timeout,
    )

    log = sys.stderr
    build_loadgen()
    available: dict[str, bool] = {}
    versions: dict[str, str] = {}
    for name in loops:
        ok, info = check_loop(name)
        available[name] = ok
        versions[name] = info
        print(f"{name}: {info if ok else 'NOT AVAILABLE (' + info + ')'}", file=log)
    if "http_hello" in benches:
        try:
            import httptools  # noqa: F401
        except ImportError:
            print("httptools is not installed (pip install httptools): skip http_hello", file=log)
            benches.remove("http_hello")

    def log_run(prefix: str, res: dict) -> None:
        cpu = res["server_cpu_pct"]
        note = "  STARVED: machine busy? (retried up to --retries times)" if res["starved"] else ""
        print(
            f"{prefix} {fmt_rate(res['rps']):>7} req/s"
            f"  p50 {fmt_us(res['p50_us']):>9}  p99 {fmt_us(res['p99_us']):>9}"
            f"  CPU server {'?' if cpu is None else f'{cpu:.0f}%'}"
            f" client {res['client_cpu_pct']:.0f}%{note}",
            file=log,
        )

    results: dict[str, dict[str, list[dict]]] = {b: {lp: [] for lp in loops} for b in benches}
    starved_runs = dict.fromkeys(loops, 0)
    errors: dict[str, dict[str, str]] = {b: {} for b in benches}
    unsupported: dict[str, dict[str, Unsupported]] = {b: {} for b in benches}
    runnable = [lp for lp in loops if available[lp]]
    started = time.monotonic()
    for r in range(rounds):
        # Rotate the loop order each round so no loop always runs first.
        order = runnable[r % len(runnable) :] + runnable[: r % len(runnable)] if runnable else []
        for b in benches:
            for lp in order:
                if lp in errors[b] or lp in unsupported[b]:
                    continue  # failed once: don't spend more rounds on it
                try:
                    for attempt in range(1 + args.retries):
                        res = run_one(b, lp, o)
                        res["attempts"] = attempt + 1
                        res["starved"] = starved(res)
                        if res["starved"]:
                            starved_runs[lp] += 1
                        log_run(f"[{r + 1}/{rounds}] {b:<18} {lp:<9}", res)
                        if not res["starved"]:
                            break
                except Unsupported as e:
                    unsupported[b][lp] = e
                    print(f"[{r + 1}/{rounds}] {b:<18} {lp:<9} UNSUPPORTED {e}", file=log)
                    continue
                except RuntimeError as e:
                    errors[b][lp] = str(e)
                    print(f"[{r + 1}/{rounds}] {b:<18} {lp:<9} ERROR {e}", file=log)
                    continue
                results[b][lp].append(res)
    print(f"total wall time {time.monotonic() - started:.1f} s\n", file=log)

    # ---- table ----------------------------------------------------------
    def med(b: str, lp: str, key: str) -> float | None:
        runs = results[b].get(lp)
        if not runs or lp in errors[b]:
            return None
        return statistics.median(run[key] for run in runs)

    def status(b: str, lp: str) -> str | None:
        if lp not in loops:
            return "skipped"
        if not available.get(lp, False):
            return "n/a"
        if lp in unsupported[b]:
            return f"n/a ({unsupported[b][lp]})"
        if lp in errors[b]:
            return "error"
        return None if results[b][lp] else "n/a"

    def client_bound(b: str, lp: str) -> bool:
        c = med(b, lp, "client_cpu_pct")
        return c is not None and c >= CLIENT_BOUND_PCT

    def rps_cell(b: str, lp: str) -> str:
        if s := status(b, lp):
            return s
        v = [run["rps"] for run in results[b][lp]]
        m = statistics.median(v)
        spread = (max(v) - min(v)) / 2 / m * 100 if len(v) > 1 else 0.0
        bound = " †" if client_bound(b, lp) else ""
        return f"{fmt_rate(m)} ±{spread:.0f}%{bound}"

    def p99_cell(b: str, lp: str) -> str:
        if s := status(b, lp):
            return s
        return fmt_us(med(b, lp, "p99_us"))  # type: ignore[arg-type]

    def cpu_per_req(b: str, lp: str, key: str = "server_cpu_pct") -> float | None:
        # Server CPU time per request (key="server_kernel_pct": its kernel part): what the loop
        # costs, whichever side is the bottleneck.
        runs = results[b].get(lp)
        if not runs or lp in errors[b] or any(r.get(key) is None for r in runs):
            return None
        return statistics.median(r[key] / 100 * 1e6 / r["rps"] for r in runs)

    def cpu_cell(b: str, lp: str) -> str:
        if s := status(b, lp):
            return s
        total, kernel = cpu_per_req(b, lp), cpu_per_req(b, lp, "server_kernel_pct")
        if total is None or kernel is None:
            return "n/a"
        return f"{total:.2f} µs ({total - kernel:.2f} + {kernel:.2f})"

    def cpu_ratio(b: str, base: str | None, key: str = "server_cpu_pct") -> str:
        fl = cpu_per_req(b, FERRO, key)
        other = cpu_per_req(b, base) if base else None
        if fl is None or other is None:
            return "n/a"
        return f"{other / fl:.2f}x ({base})"

    def ratio(b: str, base: str | None) -> str:
        fl = med(b, FERRO, "rps")
        other = med(b, base, "rps") if base else None
        if fl is None or other is None:
            return "n/a"
        return f"{fl / other:.2f}x"

    # Columns in LOOPS order, only for the requested loops. The best peer by req/s (the
    # throughput columns) and by CPU/req (the CPU columns) can be different loops.
    cols = [lp for lp in LOOPS if lp in loops]
    peers = [lp for lp in cols if lp != FERRO]
    fl_cols = FERRO in cols and bool(peers)
    best = {b: best_peer({lp: med(b, lp, "rps") for lp in peers}, False) for b in benches}
    best_cpu = {b: best_peer({lp: cpu_per_req(b, lp) for lp in peers}, True) for b in benches}

    header = ["benchmark"]
    header += [f"{lp} req/s" for lp in cols]
    header += [f"{lp} p99" for lp in cols]
    header += [f"{lp} CPU/req" for lp in cols]
    if peers:
        header.append("best peer")
    if fl_cols:
        header.append("ferroloop vs best peer")
    if FERRO in cols and "asyncio" in cols:
        header.append("ferroloop vs asyncio")
    if fl_cols:
        header += ["CPU/req vs best peer", "ceiling vs best peer"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for b in benches:
        row = [b]
        row += [rps_cell(b, lp) for lp in cols]
        row += [p99_cell(b, lp) for lp in cols]
        row += [cpu_cell(b, lp) for lp in cols]
        if peers:
            bp = best[b]
            bp_rps = med(b, bp, "rps") if bp else None
            row.append(f"{bp} {fmt_rate(bp_rps)}" if bp and bp_rps is not None else "n/a")
        if fl_cols:
            row.append(ratio(b, best[b]))
        if FERRO in cols and "asyncio" in cols:
            row.append(ratio(b, "asyncio"))
        if fl_cols:
            row.append(cpu_ratio(b, best_cpu[b]))
            row.append(cpu_ratio(b, best_cpu[b], "server_kernel_pct"))
        lines.append("| " + " | ".join(row) + " |")

    transport = "Unix sockets" if args.unix else "TCP loopback"
    pin_note = f"server on CPU {server_cpu}, client on CPU {client_cpu}" if pinned else "unpinned"
    pin_note += f", nice {nice:+d}" if nice else ""
    print(
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {rounds} round(s) of {warmup:g} s warm-up + {duration:g} s, "
        f"fresh server process per run; {args.connections} connections over {transport}; "
        f"{pin_note}; http_hello client: {http_client}."
    )
    for name in cols:
        state = versions[name] if available[name] else f"not available: {versions[name]}"
        print(f"- {name}: {state}")
    print()
    print("\n".join(lines))
    print()
    print(
        "req/s: median over the rounds, ± half the min-max range. p99: median over the rounds"
        " of each run's 99th percentile request latency. Best peer: the loop other than"
        " ferroloop with the highest median req/s. Ratios are throughput ratios"
        " (ferroloop's req/s / the other loop's): >1 means ferroloop is faster. CPU/req: the"
        " server process's CPU time (warm-up included) per request, total (user + kernel); its"
        " ratio is the best peer's by CPU/req (the peer with the lowest CPU/req, named in the"
        " cell) over ferroloop's, >1 means ferroloop does the same work with less CPU."
        " Ceiling: that peer's CPU/req / ferroloop's kernel CPU/req, the CPU/req ratio"
        " ferroloop would reach if everything it does in user space cost nothing."
    )
    if any(starved_runs.values()):
        counts = ", ".join(f"{lp} {n}" for lp, n in starved_runs.items())
        print(
            f"Starved runs (server and client both below {STARVED_PCT}% CPU: the machine was"
            f" busy, or the loop stalled), each retried up to {args.retries} times: {counts}."
            " A loop with many more of them than the others may have a stall of its own."
        )
    if any(client_bound(b, lp) for b in benches for lp in loops):
        print(
            f"† the client used >= {CLIENT_BOUND_PCT}% of its core (median): this cell is"
            " limited by the load generator as much as by the server, so ratios against it"
            " understate the difference."
        )
    for b in benches:
        for lp, err in errors[b].items():
            print(f"- {b} on {lp} failed: {err}")
        for lp, unsup in unsupported[b].items():
            print(f"- {b} on {lp}: not supported ({unsup}): {unsup.detail}")

    if args.json:
        out = {
            "meta": {
                "python": sys.version,
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "rounds": rounds,
                "retries": args.retries,
                "starved_runs": starved_runs,
                "duration_s": duration,
                "warmup_s": warmup,
                "connections": args.connections,
                "transport": "unix" if args.unix else "tcp",
                "http_client": http_client,
                "server_cpu": server_cpu,
                "nice": nice,
                "client_cpu": client_cpu,
                "loops": {
                    lp: {"available": available[lp], "version_or_error": versions[lp]}
                    for lp in loops
                },
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            "results": {
                b: {
                    "server": BENCHMARKS[b].server,
                    "size": BENCHMARKS[b].size,
                    "loops": {
                        lp: {
                            "runs": results[b][lp],
                            "median_rps": med(b, lp, "rps"),
                            "median_p50_us": med(b, lp, "p50_us"),
                            "median_p99_us": med(b, lp, "p99_us"),
                            "error": errors[b].get(lp),
                            "unsupported": (
                                {"reason": str(u), "detail": u.detail}
                                if (u := unsupported[b].get(lp))
                                else None
                            ),
                        }
                        for lp in loops
                    },
                    "best_peer": best[b],
                    "best_peer_cpu_per_req": best_cpu[b],
                }
                for b in benches
            },
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {path}", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
