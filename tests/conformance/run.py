#!/usr/bin/env python3
"""Run CPython's own asyncio test-suite (``test.test_asyncio``) on ferroloop.

    python tests/conformance/run.py                 # default module set
    python tests/conformance/run.py --module test_tasks --module test_locks
    python tests/conformance/run.py --update        # rewrite expected/3.X.txt
    FERROLOOP_CONFORMANCE_STOCK=1 python tests/conformance/run.py   # check the machinery

Each module runs in its own worker process (harness.py) that patches every loop-creation
point before importing the tests; a test that hangs is killed after --timeout seconds and
counts as a failure, and the worker is restarted after it.  The last line printed is
``conformance: N passed, M failed`` where M = unexpected failures + unexpected passes
(tests listed in expected/3.X.txt, the list of the running minor version, that now pass),
plus any test that created a stock asyncio loop (a missed patch point: the test did not run on
ferroloop).  Exit status: 0 all as expected, 1 unexpected results, 2 the runner itself could
not run.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "harness.py"
# One list per minor version: the suite and asyncio differ between them.
EXPECTED_FILE = HERE / "expected" / f"{sys.version_info.major}.{sys.version_info.minor}.txt"
RESULTS_DIR = HERE / ".results"
PACKAGE = "test.test_asyncio"

# Ordered roughly by stock run time (longest first) so two workers pack well.
DEFAULT_MODULES = [
    "test_tasks",
    "test_subprocess",
    "test_ssl",
    "test_events",
    "test_taskgroups",
    "test_sock_lowlevel",
    "test_futures",
    "test_waitfor",
    "test_sendfile",
    "test_streams",
    "test_locks",
    "test_timeouts",
    "test_runners",
    "test_server",
    "test_context",
    "test_queues",
    "test_pep492",
    "test_protocols",
    "test_threads",
    "test_futures2",
    "test_buffered_proto",
    "test_unix_events",
    "test_sslproto",
    # Newer than 3.11: run where the interpreter's suite has them.
    "test_eager_task_factory",
    "test_staggered",
    "test_graph",
    "test_free_threading",
    "test_server_context",
]
# Not run by default (stdlib internals, mock-based, or Windows-only); still accepted by
# --module: test_base_events, test_selector_events, test_proactor_events, test_transports,
# test_windows_events, test_windows_utils. test_unix_events and test_sslproto run: most of
# them test asyncio's transport classes, which ferroloop uses for pipes, subprocesses and TLS;
# their mocks of stdlib internals are expected failures.

PASS_OUTCOMES = {"pass", "xfail"}  # "xfail" = unittest @expectedFailure that failed
FAIL_OUTCOMES = {"fail", "error", "xpass", "timeout", "crash"}
FLAKY_TAG = "[flaky]"  # in a reason: the test may pass or fail, both are accepted
# In a reason: the failing test hangs (it waits for something its failed assertion never let
# happen), so it is killed after HANGS_TIMEOUT instead of --timeout. It still runs: a pass shows.
HANGS_TAG = "[hangs]"
HANGS_TIMEOUT = 3.0

NETWORKING_ISSUE = 3
NETWORKING_NAMES = re.compile(
    r"\b(sock_\w+|create_connection|create_server|create_unix_\w+|create_datagram_endpoint|"
    r"connect_accepted_socket|connect_read_pipe|connect_write_pipe|subprocess_exec|"
    r"subprocess_shell|getaddrinfo|getnameinfo|start_tls|sendfile|_make_\w+_transport|"
    r"start_server|start_unix_server|open_connection|open_unix_connection|"
    r"create_subprocess_\w+)\b"
)


# --------------------------------------------------------------------------- expectations
def load_expected(path: Path) -> tuple[dict[str, str], list[str]]:
    """Return ({test id: reason}, leading comment lines)."""
    expected: dict[str, str] = {}
    header: list[str] = []
    if not path.exists():
        return expected, header
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if not expected:
                header.append(line)
            continue
        tid, _, reason = stripped.partition("#")
        expected[tid.strip()] = reason.strip()
    return expected, header


def derive_reason(rec: dict) -> str:
    outcome = rec.get("outcome")
    msg = (rec.get("msg") or "").strip()
    if outcome == "timeout":
        return "timeout: test hung and was killed"
    if outcome == "crash":
        return f"crash: {msg}"[:120]
    if outcome == "xpass":
        return "unexpected success of a unittest.expectedFailure test"
    if f"issue {NETWORKING_ISSUE}" in msg and "not implement" in msg:
        return f"networking not implemented (issue {NETWORKING_ISSUE})"
    if msg.startswith("NotImplementedError"):
        where = rec.get("where") or ""
        detail = msg.partition(":")[2].strip()
        name = detail or where.rpartition(" in ")[2]
        if NETWORKING_NAMES.search(name) or NETWORKING_NAMES.search(msg):
            return f"networking not implemented (issue {NETWORKING_ISSUE})"
        return f"not implemented: {name}"[:120] if name else "NotImplementedError"
    return msg[:120] or outcome or "failed"


# --------------------------------------------------------------------------- running
class ModuleRun:
    def __init__(self, module: str) -> None:
        self.module = module
        self.records: dict[str, dict] = {}
        self.collected: list[str] = []
        self.info: dict = {}
        self.fixture_loops: dict[str, list[str]] = {}
        self.restarts = 0
        self.elapsed = 0.0
        self.notes: list[str] = []


def _log_tail_for(log: Path, tid: str | None, limit: int = 4000) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    if tid:
        marker = f"=== START {tid}\n"
        pos = text.rfind(marker)
        if pos >= 0:
            text = text[pos + len(marker) :]
    return text[-limit:]


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def run_module(
    module: str,
    timeout: float,
    workdir: Path,
    only: list[str] | None = None,
    tag: str = "",
    extra_args: tuple[str, ...] = (),
) -> ModuleRun:
    run = ModuleRun(module)
    done_ids: set[str] = set()
    t0 = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        stem = f"{module}{tag}.{attempt}"
        out = workdir / f"{stem}.jsonl"
        log = workdir / f"{stem}.log"
        cmd = [sys.executable, str(HARNESS), "--module", module, "--out", str(out)]
        cmd += ["--timeout", str(timeout), *extra_args]
        if done_ids:
            skip_file = workdir / f"{stem}.skip.json"
            skip_file.write_text(json.dumps(sorted(done_ids)))
            cmd += ["--skip", str(skip_file)]
        if only is not None:
            only_file = workdir / f"{stem}.only.json"
            only_file.write_text(json.dumps(sorted(only)))
            cmd += ["--only", str(only_file)]
        cwd = Path(tempfile.mkdtemp(prefix=f"{stem}.", dir=workdir))
        env = dict(os.environ, PYTHONFAULTHANDLER="1", PYTHONUNBUFFERED="1")
        env.pop("PYTHONASYNCIODEBUG", None)
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            # Backstop for hangs the in-process watchdog cannot catch.
            last_size, last_change = -1, time.monotonic()
            while proc.poll() is None:
                time.sleep(0.1)
                size = out.stat().st_size if out.exists() else 0
                now = time.monotonic()
                if size != last_size:
                    last_size, last_change = size, now
                elif now - last_change > timeout + 60:
                    run.notes.append(f"worker stalled, killed (attempt {attempt})")
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            try:  # reap anything the tests left behind in the worker's session
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        rc = proc.returncode
        shutil.rmtree(cwd, ignore_errors=True)

        inflight = None
        finished = False
        if out.exists():
            for line in out.read_text(encoding="utf-8").splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                kind = ev.get("e")
                if kind == "collected":
                    if not run.collected:
                        run.collected = ev["ids"]
                        run.info = {k: v for k, v in ev.items() if k not in ("e", "ids")}
                elif kind == "start":
                    inflight = ev["id"]
                elif kind == "result":
                    # A second record (error escaping after stopTest) must not hide a
                    # first failure.
                    prev = run.records.get(ev["id"])
                    if prev is None or prev["outcome"] in PASS_OUTCOMES | {"skip"}:
                        run.records[ev["id"]] = ev
                    done_ids.add(ev["id"])
                    if ev["id"] == inflight:
                        inflight = None
                elif kind == "module_skip":
                    run.records[f"{PACKAGE}.{module}"] = {
                        "id": f"{PACKAGE}.{module}",
                        "outcome": "skip",
                        "msg": ev.get("msg", ""),
                        "loops": {},
                        "pseudo": True,
                    }
                    finished = True
                elif kind == "done":
                    run.fixture_loops = ev.get("fixture_loops") or {}
                    finished = True
        if finished:
            break
        tail = _log_tail_for(log, inflight)
        if inflight is not None:
            if "Timeout (" in tail and rc == 1:
                outcome, msg = "timeout", "killed by the watchdog (hung)"
            elif rc is not None and rc < 0:
                outcome, msg = "crash", f"worker died with {_signal_name(rc)}"
            else:
                outcome, msg = "crash", f"worker exited with status {rc}"
            run.records[inflight] = {
                "id": inflight,
                "outcome": outcome,
                "msg": msg,
                "tb": tail,
                "loops": {},
                "dur": timeout if outcome == "timeout" else None,
            }
            done_ids.add(inflight)
            run.restarts += 1
            remaining = [t for t in run.collected if t not in done_ids]
            if only is not None:
                remaining = [t for t in remaining if t in only]
            if remaining:
                continue
            break
        # Died outside any test: at import, in a class/module fixture, or at the end.
        if not run.collected:
            pid = f"{PACKAGE}.{module}"
            run.records[pid] = {
                "id": pid,
                "outcome": "error",
                "pseudo": True,
                "loops": {},
                "tb": tail,
                "msg": f"module could not be loaded (worker status {rc})",
            }
        else:
            targets = only if only is not None else run.collected
            for tid in targets:
                if tid not in run.records:
                    run.records[tid] = {
                        "id": tid,
                        "outcome": "crash",
                        "loops": {},
                        "tb": tail,
                        "msg": f"not run: worker died outside a test (status {rc})",
                    }
        break
    run.elapsed = time.monotonic() - t0
    return run


# --------------------------------------------------------------------------- reporting
def classify(rec: dict, expected: dict[str, str]) -> str:
    """-> pass | skip | xfail (expected failure) | unexpected_fail | unexpected_pass."""
    tid, outcome = rec["id"], rec["outcome"]
    reason = expected.get(tid)
    if outcome == "skip":
        return "skip"
    if outcome in PASS_OUTCOMES:
        if reason is not None and FLAKY_TAG not in reason:
            return "unexpected_pass"
        return "pass"
    return "xfail" if reason is not None else "unexpected_fail"


def one_line(rec: dict) -> str:
    msg = (rec.get("msg") or rec["outcome"]).replace("\n", " ")
    where = rec.get("where")
    text = f"{rec['outcome']}: {msg}"
    if where and rec["outcome"] in ("fail", "error"):
        text += f"  [{where}]"
    return text[:220]


def check_ferroloop() -> str | None:
    code = "import ferroloop; loop = ferroloop.new_event_loop(); loop.close()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return "`ferroloop.new_event_loop()` hung"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {proc.returncode}"
    return None


def module_exists(name: str) -> bool:
    """The running interpreter's test.test_asyncio has this module (it grows each version)."""
    import importlib.util

    return importlib.util.find_spec(f"{PACKAGE}.{name}") is not None


def normalize_module(name: str) -> str:
    name = name.removesuffix(".py")
    for prefix in (f"{PACKAGE}.", "test_asyncio."):
        name = name.removeprefix(prefix)
    return name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--module", "-m", action="append", help="module to run (repeatable)")
    ap.add_argument("--update", action="store_true", help="rewrite expected/3.X.txt")
    ap.add_argument(
        "--expected",
        type=Path,
        default=None,
        help="expected failures file (default: expected/3.X.txt for the running 3.X; none in "
        "stock mode)",
    )
    ap.add_argument("--timeout", type=float, default=20.0, help="per-test limit (s)")
    ap.add_argument("--jobs", "-j", type=int, default=max(2, os.cpu_count() or 1))
    ap.add_argument("--retries", type=int, default=1, help="re-run unexpected failures")
    ap.add_argument("--stock", action="store_true", help="= FERROLOOP_CONFORMANCE_STOCK=1")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--tb", action="store_true", help="print tracebacks of unexpected failures")
    ap.add_argument(
        "--keep-test-loops",
        action="store_true",
        help="keep utils.TestLoop even for new_test_loop() without a fake clock",
    )
    args = ap.parse_args(argv)

    if args.stock:
        os.environ["FERROLOOP_CONFORMANCE_STOCK"] = "1"
    stock = os.environ.get("FERROLOOP_CONFORMANCE_STOCK", "") not in ("", "0")
    loop_label = "the patched stock loop" if stock else "ferroloop"
    if args.module:
        modules = [normalize_module(m) for m in args.module]
    else:
        modules = [m for m in DEFAULT_MODULES if module_exists(m)]
    if args.expected is None:
        if stock and args.update:
            print("conformance: --update in stock mode needs an explicit --expected FILE")
            return 2
        # expected/3.X.txt describes ferroloop; the stock loop should pass everything.
        args.expected = Path(os.devnull) if stock else EXPECTED_FILE
        if not args.expected.exists() and not args.update:
            print(
                f"conformance: no list of expected failures for Python "
                f"{sys.version_info.major}.{sys.version_info.minor} ({args.expected}); "
                "make one with --update, a reason for each line"
            )
            return 2

    if not stock:
        problem = check_ferroloop()
        if problem:
            print(f"conformance: cannot use ferroloop: {problem}", file=sys.stderr)
            print("(set FERROLOOP_CONFORMANCE_STOCK=1 to test the runner on the stock loop)")
            return 2

    args.results_dir.mkdir(parents=True, exist_ok=True)
    old_runs = sorted(args.results_dir.glob("run-*"), key=lambda p: p.stat().st_mtime)
    for old in old_runs[:-4]:  # keep the logs of the last few runs only
        shutil.rmtree(old, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=args.results_dir))
    expected, header = load_expected(args.expected)
    print(
        f"conformance: {len(modules)} modules on {loop_label}, timeout {args.timeout:g}s/test, "
        f"{args.jobs} workers, logs in {workdir}"
    )
    extra: tuple[str, ...] = ("--keep-test-loops",) if args.keep_test_loops else ()
    hanging = sorted(tid for tid, reason in expected.items() if HANGS_TAG in reason)
    if hanging:
        hangs_file = workdir / "hangs.json"
        hangs_file.write_text(json.dumps(hanging))
        extra += ("--hangs", str(hangs_file), "--hangs-timeout", str(HANGS_TIMEOUT))
    t0 = time.monotonic()

    runs: dict[str, ModuleRun] = {}
    lock = threading.Lock()

    def progress(run: ModuleRun) -> None:
        counts = collections.Counter(classify(r, expected) for r in run.records.values())
        extra = f", {run.restarts} worker restarts" if run.restarts else ""
        with lock:
            print(
                f"  {run.module:<22} {len(run.records):4d} tests: {counts['pass']} pass, "
                f"{counts['xfail']} xfail, {counts['skip']} skip, "
                f"{counts['unexpected_fail'] + counts['unexpected_pass']} unexpected "
                f"({run.elapsed:.1f}s{extra})",
                flush=True,
            )

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(run_module, m, args.timeout, workdir, None, "", extra): m for m in modules
        }
        for fut in concurrent.futures.as_completed(futures):
            run = fut.result()
            runs[run.module] = run
            progress(run)

    records: dict[str, dict] = {}
    for m in modules:
        for tid, rec in runs[m].records.items():
            rec["module"] = m
            records[tid] = rec

    # Retry unexpected (cheap) failures once in a fresh worker to filter out flakiness.
    flaky: list[str] = []
    for _ in range(max(args.retries, 0)):
        again = [
            tid
            for tid, rec in records.items()
            if classify(rec, expected) == "unexpected_fail"
            and rec["outcome"] in ("fail", "error")
            and not rec.get("pseudo")
        ]
        if not again or len(again) > 50:
            break
        print(f"  retrying {len(again)} unexpected failure(s) once...", flush=True)
        by_mod: dict[str, list[str]] = collections.defaultdict(list)
        for tid in again:
            by_mod[records[tid]["module"]].append(tid)
        for m, ids in by_mod.items():
            retry = run_module(m, args.timeout, workdir, ids, ".retry", extra)
            for tid in ids:
                new = retry.records.get(tid)
                if new and new["outcome"] in PASS_OUTCOMES:
                    new["module"] = m
                    new["first_try"] = one_line(records[tid])
                    records[tid] = new
                    flaky.append(tid)

    elapsed = time.monotonic() - t0
    run_modules = set(modules)

    if args.update:
        new_expected: dict[str, str] = {}
        for tid, reason in expected.items():
            rec = records.get(tid)
            mod = tid.removeprefix(PACKAGE + ".").split(".")[0]
            if rec is None:
                if mod not in run_modules:
                    new_expected[tid] = reason  # module not run this time: keep
                continue  # stale (module ran, test gone)
            if rec["outcome"] == "skip" or (FLAKY_TAG in reason):
                new_expected[tid] = reason
        for tid, rec in records.items():
            if rec["outcome"] in FAIL_OUTCOMES:
                new_expected[tid] = expected.get(tid) or derive_reason(rec)
        if not header:
            header = [
                "# Tests of test.test_asyncio expected to fail on ferroloop.",
                "# Maintained by `python tests/conformance/run.py --update`; reasons are kept.",
                f"# Add {FLAKY_TAG} to a reason to accept both outcomes.",
            ]
        lines = header + [f"{tid}  # {new_expected[tid]}" for tid in sorted(new_expected)]
        args.expected.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"updated {args.expected} ({len(new_expected)} entries, was {len(expected)})")
        expected = new_expected

    # ------------------------------------------------------------------ summary
    real = {tid: r for tid, r in records.items() if not r.get("pseudo")}
    cls = {tid: classify(r, expected) for tid, r in records.items()}
    counts = collections.Counter(cls.values())
    unexpected_fail = sorted(t for t, c in cls.items() if c == "unexpected_fail")
    unexpected_pass = sorted(t for t, c in cls.items() if c == "unexpected_pass")
    stale = sorted(
        t
        for t in expected
        if t not in records and t.removeprefix(PACKAGE + ".").split(".")[0] in run_modules
    )

    def kinds(rec: dict) -> set[str]:
        return set(rec.get("loops", {})) - {"ran"}

    ran_on = [t for t, r in real.items() if "patched" in r.get("loops", {}).get("ran", [])]
    ran_set = set(ran_on)
    created_only = [t for t, r in real.items() if "patched" in kinds(r) and t not in ran_set]
    stock_tests = {t: r["loops"]["stock"] for t, r in real.items() if "stock" in kinds(r)}
    mock_only = [t for t, r in real.items() if kinds(r) and not kinds(r) & {"patched", "stock"}]
    no_loop = [t for t, r in real.items() if not kinds(r)]
    no_loop_skipped = [t for t in no_loop if real[t]["outcome"] == "skip"]
    fixture_stock = {
        m: run.fixture_loops["stock"] for m, run in runs.items() if "stock" in run.fixture_loops
    }

    print()
    impls = {run.info.get("impl") for run in runs.values() if run.info.get("impl")}
    for impl in sorted(impls):
        print(f"loop under test: {impl}")
    print(
        f"tests: {len(real)} total; passed {counts['pass']}, expected failures "
        f"{counts['xfail']}, skipped {counts['skip']}, unexpected failures "
        f"{len(unexpected_fail)}, unexpected passes {len(unexpected_pass)}"
        + (f" ({len(flaky)} passed only on retry)" if flaky else "")
    )
    print(
        f"loops: {len(ran_on)} tests ran on {loop_label}; {len(created_only)} created one but "
        f"ran only other loops or none; {len(mock_only)} used only the tests' own mock loops "
        f"(utils.TestLoop with a fake clock, BaseEventLoop()); {len(no_loop)} touched no "
        f"loop ({len(no_loop_skipped)} of them skipped); "
        f"{len(stock_tests)} created a STOCK asyncio loop"
    )
    if not ran_on and created_only:
        print(
            "  (no patched loop was seen running: the loop does not call "
            "asyncio.events._set_running_loop, so 'created' is the only evidence)"
        )
    if stock_tests or fixture_stock:
        print("STOCK loops were created (missed patch point?):")
        for tid in sorted(stock_tests)[:30]:
            print(f"  {tid}: {', '.join(stock_tests[tid])}")
        if len(stock_tests) > 30:
            print(f"  ... and {len(stock_tests) - 30} more")
        for m, names in sorted(fixture_stock.items()):
            print(f"  {m} (outside tests): {', '.join(names)}")

    failures = [r for r in records.values() if r["outcome"] in FAIL_OUTCOMES]
    if failures:
        causes = collections.Counter(expected.get(r["id"]) or derive_reason(r) for r in failures)
        print(f"failure causes ({len(failures)} failing tests, expected or not):")
        for reason, n in causes.most_common(15):
            print(f"  {n:5d}  {reason}")
        if len(causes) > 15:
            print(f"  ... {len(causes) - 15} more distinct causes")
    if flaky:
        print("passed only on retry (flaky?):")
        for tid in sorted(flaky):
            print(f"  {tid}  (first: {records[tid]['first_try']})")
    if unexpected_fail:
        print(f"UNEXPECTED FAILURES ({len(unexpected_fail)}):")
        for tid in unexpected_fail:
            print(f"  {tid}: {one_line(records[tid])}")
            if args.tb and records[tid].get("tb"):
                print("    " + records[tid]["tb"].rstrip()[-2500:].replace("\n", "\n    "))
    if unexpected_pass:
        print(
            f"UNEXPECTED PASSES ({len(unexpected_pass)}) - remove them from "
            f"{args.expected.name} (or run --update):"
        )
        for tid in unexpected_pass:
            print(f"  {tid}  # was: {expected[tid]}")
    if stale:
        print(f"note: {len(stale)} entries of {args.expected.name} match no test (stale):")
        for tid in stale[:10]:
            print(f"  {tid}")

    report = {
        "loop": loop_label,
        "elapsed": round(elapsed, 1),
        "modules": {
            m: {
                "elapsed": round(r.elapsed, 1),
                "restarts": r.restarts,
                "notes": r.notes,
                "info": r.info,
            }
            for m, r in runs.items()
        },
        "records": records,
        "unexpected_failures": unexpected_fail,
        "unexpected_passes": unexpected_pass,
        "stock_loop_tests": stock_tests,
        "loop_usage": {
            "ran": len(ran_on),
            "created_only": len(created_only),
            "mock_only": len(mock_only),
            "no_loop": len(no_loop),
        },
        "flaky": flaky,
    }
    (args.results_dir / "results.json").write_text(json.dumps(report, indent=1))
    print(f"details: {args.results_dir / 'results.json'}; run time {elapsed:.1f}s")
    # A test that made a stock loop did not (only) run on ferroloop: a missed patch point.
    n_failed = len(unexpected_fail) + len(unexpected_pass) + len(stock_tests) + len(fixture_stock)
    print(f"conformance: {counts['pass']} passed, {n_failed} failed")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
