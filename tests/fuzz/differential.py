#!/usr/bin/env python3
"""Differential fuzzer: the same hostile calls on ferroloop and on the stock loop, compared.

Each case (``surface.generate(seed, index)``) is one to three calls of a public method of the
loop, a transport, a server, a handle or a future, with arguments drawn from ``values``, made in
one of several modes (idle loop, running loop, closed loop, another thread, inside a protocol
callback). Every case runs in child processes, once per loop, many cases per child; the outcomes
(return values normalised, exception types and messages, everything the loop did afterwards:
callbacks, protocol events, log records, warnings, unraisable exceptions, leaked fds) are
compared. A crash, a Rust panic or a hang is always a failure. A difference is a failure unless
``known`` explains it: a by-design difference of docs/differences.md or one being fixed
(tests/fuzz/pending.txt).

    tests/fuzz/differential.py --seeds 1,2,3 --cases 500     # those seeds, 500 cases each
    tests/fuzz/differential.py --seconds 600                 # fresh seeds for ten minutes
    tests/fuzz/differential.py --case 7/123                  # one case, both outcomes in full

Exit status: 0 when every difference is explained, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import known  # noqa: E402
from fixtures import FLAVORS, loose  # noqa: E402
from surface import format_case, generate, parse_seeds  # noqa: E402

# No result for this long means the child is stuck (the case alarm is 5 s; a case that never
# returns to Python code is the only thing that can get here).
HANG_TIMEOUT = 15.0
# Cases per child: enough to amortise the interpreter's start, few enough that state a case
# leaks behind (and that teardown missed) cannot pile up.
BATCH = 200

CRASH_MARKERS = ("panicked at", "Fatal Python error", "PanicException", "Segmentation fault")


def python_argv():
    # The children run with this interpreter's flags (-X dev, -W error::ResourceWarning...).
    return [sys.executable, *subprocess._args_from_interpreter_flags()]


def repro_command(case_id):
    script = os.path.relpath(os.path.abspath(__file__))
    argv = [os.path.basename(sys.executable), *subprocess._args_from_interpreter_flags()]
    return " ".join([*argv, script, "--case", case_id])


# -- the child ----------------------------------------------------------------------------------


def worker(flavor, shift):
    cases = json.load(sys.stdin)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    # fds 0 and 1 are fair game for the cases (add_reader(0)...): quiet, never the channel.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    import fixtures

    fixtures.SHIFT[0] = shift

    fixtures.install_guard()
    fixtures.install_recording()
    if flavor == "ferroloop":
        import ferroloop  # noqa: F401
        from ferroloop import _unix

        # The one descriptor ferroloop keeps for the process, made on first need (a pipe
        # closed under its transport): made now, it is the child's own, not a leak of
        # whichever case or seed first needed it.
        _unix._no_fd()
    from cases import run_case

    tmpdir = tempfile.mkdtemp(prefix="ferroloop-fuzz-")
    os.chdir(tmpdir)
    import gc

    # What is alive now (modules, classes) lives to the end: out of the collector's sight, the
    # few collections per case cost a fraction.
    gc.collect()
    gc.freeze()
    for case in cases:
        out.write(f"S {case['id']}\n")
        outcome = run_case(case, flavor, tmpdir)
        out.write("R " + json.dumps([case["id"], outcome], default=repr) + "\n")
    out.close()
    sys.stdout.flush()
    # Threads the cases left (executors) must not keep the child alive.
    os._exit(0)


# -- the parent ---------------------------------------------------------------------------------


class Child:
    """One worker process running a list of cases; collects outcomes, crashes and hangs."""

    def __init__(self, flavor, cases, shift=0):
        self.flavor = flavor
        self.cases = cases
        self.shift = shift

    def run(self):
        """{case id: outcome}; a crash or hang is an outcome too ({"crash": ...}/{"hang": ...})."""
        results = {}
        remaining = list(self.cases)
        while remaining:
            done = self._run_some(remaining, results)
            remaining = remaining[done:]
        return results

    def _run_some(self, cases, results):
        cases = cases[:BATCH]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [*python_argv(), os.path.abspath(__file__), "--worker", self.flavor]
                + (["--shift", str(self.shift)] if self.shift else []),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=child_env(),
            )
            proc.stdin.write(json.dumps(cases).encode())
            proc.stdin.close()
            started, finished, buf = None, 0, b""
            hung = False
            deadline = time.monotonic() + HANG_TIMEOUT
            while True:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    hung = True
                    break
                ready, _, _ = select.select([proc.stdout], [], [], timeout)
                if not ready:
                    continue
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.startswith(b"S "):
                        started = line[2:].decode()
                        deadline = time.monotonic() + HANG_TIMEOUT
                    elif line.startswith(b"R "):
                        case_id, outcome = json.loads(line[2:])
                        results[case_id] = outcome
                        finished += 1
                        started = None
                        deadline = time.monotonic() + HANG_TIMEOUT
            if hung:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if started is not None:
            tail = stderr[-3000:]
            results[started] = (
                {"hang": True} if hung else {"crash": proc.returncode, "stderr": tail}
            )
            return finished + 1
        if finished < len(cases):
            # Died between cases (at exit?): blame the last one finished.
            results[cases[max(finished - 1, 0)]["id"]] = {
                "crash": proc.returncode,
                "stderr": stderr[-3000:],
            }
            return max(finished, 1)
        if any(marker in stderr for marker in CRASH_MARKERS):
            # A panic that did not kill the child still fails the run; the output does not say
            # which case printed it, so the batch is named.
            batch = [c["id"] for c in cases[:finished]]
            results.setdefault("batch-stderr", []).append((batch, stderr))
        return finished


def locate_marker(flavor, case_ids):
    """The case of ``case_ids`` that makes a child print a crash marker, by halving the batch
    (each half in a fresh child); None if the marker needs several cases together."""

    def prints(ids):
        out = Child(flavor, [generate(*map(int, c.split("/"))) for c in ids]).run()
        return "batch-stderr" in out or any("crash" in v for v in out.values() if type(v) is dict)

    ids = list(case_ids)
    while len(ids) > 1:
        half = ids[: len(ids) // 2]
        if prints(half):
            ids = half
        elif prints(ids[len(ids) // 2 :]):
            ids = ids[len(ids) // 2 :]
        else:
            return None
    return ids[0] if ids and prints(ids) else None


def child_env():
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    # Tracebacks of a crash name the case's code.
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def run_both(cases, shift=0):
    """Outcomes of ``cases`` on each loop, the two children running side by side."""
    out = {}

    def one(flavor):
        out[flavor] = Child(flavor, cases, shift).run()

    threads = [threading.Thread(target=one, args=(f,)) for f in FLAVORS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out["asyncio"], out["ferroloop"]


def broken(outcome):
    """Why an outcome is a failure whatever the other loop did (crash, hang, panic), or None."""
    if outcome is None:
        return "no outcome"
    if "crash" in outcome:
        return f"crash (exit status {outcome['crash']})"
    if "hang" in outcome:
        return "hang"
    if "PanicException" in json.dumps(outcome):
        return "Rust panic"
    return None


# Calls whose events arrive in an order no loop decides: a child's exit (seen by a thread or a
# pidfd) against its pipes' EOF.
UNORDERED = {"subprocess_exec", "subprocess_shell"}


def _collected(event):
    # Logged when the collector frees a pending task: when that happens depends on the objects'
    # lifetimes, which differ between two implementations (and with the GC's schedule).
    return event[:1] == ["log"] and event[3].startswith("Task was destroyed but it is pending")


def canonical(case, outcome):
    if not outcome or "events" not in outcome:
        return outcome
    events = outcome["events"]
    if any(c[0] in UNORDERED for c in case["calls"]):
        # Which events, not in which order nor how often (repeats are folded by adjacency).
        unique = {json.dumps(e): e for e in events}
        return dict(outcome, events=[unique[k] for k in sorted(unique)])
    if any(map(_collected, events)):
        events = [e for e in events if not _collected(e)] + [e for e in events if _collected(e)]
        outcome = dict(outcome, events=events)
    return outcome


def compare(case, stock, ferro):
    """None when the outcomes agree, else (kind, keys): kind is "explained" (keys: the known
    differences that explain it), "message" (only wording differs), "behaviour", or a crash,
    hang or panic."""
    why = broken(ferro)
    if why:
        return why, None
    if broken(stock):
        return f"stock loop: {broken(stock)}", None
    stock, ferro = canonical(case, stock), canonical(case, ferro)
    if stock == ferro or (stock.get("timeout") and ferro.get("timeout")):
        # Both blocked until the alarm stopped them (a blocking socket...): where exactly the
        # alarm found each of them is the machine's business.
        return None
    # Matchers edit copies; what they leave is put in canonical form again before comparing.
    keys = known.explain(case, stock, ferro, lambda a, b: canonical(case, a) == canonical(case, b))
    if keys:
        return "explained", keys
    if loose(stock) == loose(ferro) or known.explain(
        case, stock, ferro, lambda a, b: loose(canonical(case, a)) == loose(canonical(case, b))
    ):
        return "message", None
    return "behaviour", None


def first_difference(stock, ferro):
    """Lines that show where two outcomes part, for the report."""
    from cases import summarize

    a, b = summarize(stock), summarize(ferro)
    lines = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else "-"
        y = b[i] if i < len(b) else "-"
        if x != y:
            lines.append(f"    stock:     {x}")
            lines.append(f"    ferroloop: {y}")
            if len(lines) >= 6:
                break
    return lines


def signature(case, stock, ferro):
    """What makes two differences the same finding: the target, the method, and the first
    place where the loose outcomes part."""
    from cases import summarize

    if loose(stock) == loose(ferro):
        a, b = summarize(stock), summarize(ferro)
    else:
        a, b = summarize(loose(stock)), summarize(loose(ferro))
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else "-"
        y = b[i] if i < len(b) else "-"
        if x != y:
            index = int(x.split(":")[0][5:]) if x.startswith("call ") else None
            calls = case["calls"]
            # The index of a call made from inside a callback can pass the case's own list.
            method = calls[index][0] if index is not None and index < len(calls) else None
            return (case["target"], method, x[:160], y[:160])
    return (case["target"], None, "", "")


def fuzz(case_ids, verbose=False, stream=sys.stdout):
    """Run, compare, confirm; returns (failures, stats)."""
    cases = {cid: generate(*map(int, cid.split("/"))) for cid in case_ids}
    order = list(cases.values())
    t0 = time.monotonic()
    stock, ferro = run_both(order)
    stats = {"cases": len(order), "seconds": 0.0, "explained": defaultdict(int)}
    failures = []
    for flavor, results in (("ferroloop", ferro), ("asyncio", stock)):
        for batch, text in results.get("batch-stderr", []):
            # A panic (or a fatal error) that did not end the child: the batch it was in.
            if flavor == "ferroloop":
                failures.append(("crash marker", batch[0], batch))
            marker = next(m for m in CRASH_MARKERS if m in text)
            i = text.index(marker)
            where = f"the batch {batch[0]}..{batch[-1]}" if batch else "its first batch"
            print(f"\n{flavor.upper()} CHILD PRINTED {marker!r} in {where}:")
            print("    " + text[max(0, i - 1500) : i + 1500].replace("\n", "\n    "))
            culprit = locate_marker(flavor, batch) if flavor == "ferroloop" else None
            if culprit:
                print(f"    the case that prints it alone: {culprit}")
                print(f"    reproduce: {repro_command(culprit)}")
            else:
                print(f"    reproduce: {repro_command(batch[0])} (and the batch's other cases)")
    suspects = []
    message_suspects = []
    for case in order:
        cid = case["id"]
        result = compare(case, stock.get(cid), ferro.get(cid))
        if result is None:
            continue
        kind, keys = result
        if kind == "explained":
            for key in keys:
                stats["explained"][key] += 1
            continue
        if kind == "message":
            message_suspects.append(case)
        else:
            suspects.append(case)
    # A message difference counts only where stock's message is stable: the same in a child
    # whose fd numbers and hash seed differ.
    if message_suspects:
        shifted, _ = run_both_stock(message_suspects)
        for case in message_suspects:
            cid = case["id"]
            if canonical(case, shifted.get(cid)) == canonical(case, stock.get(cid)):
                suspects.append(case)
    # Each difference must show again, twice, with the case alone in fresh children; one that
    # does not is reported (it may be a race, or another case's leftovers) but does not fail the
    # run; a crash or hang always does. One case per kind of difference is tried (up to three).
    confirmed = []  # (kind, case, stock outcome, ferroloop outcome, ids of the same kind)
    by_kind = defaultdict(list)
    for case in suspects:
        by_kind[signature(case, stock[case["id"]], ferro[case["id"]])].append(case)
    for members in by_kind.values():
        ids = [m["id"] for m in members]
        for case in members[:3]:
            cid = case["id"]
            first = compare(case, stock.get(cid), ferro.get(cid))
            # Twice: what depends on a race (a child's exit against its pipes...) must not
            # fail a run by luck.
            stock2 = ferro2 = again = None
            for _ in range(2):
                stock2, ferro2 = run_both([case])
                again = compare(case, stock2.get(cid), ferro2.get(cid))
                if again is None or again[0] == "explained":
                    break
            if again is not None and again[0] != "explained":
                confirmed.append((again[0], case, stock2[cid], ferro2[cid], ids))
                break
            if first[0] not in ("behaviour", "message"):
                confirmed.append((first[0], case, stock[cid], ferro[cid], ids))
                break
            stats.setdefault("unconfirmed", []).append(
                (cid, first_difference(stock[cid], ferro[cid])[:2])
            )
    for kind, case, s, f, ids in sorted(confirmed, key=lambda c: -len(c[4])):
        failures.append((kind, case["id"], ids))
        print(f"\n{kind.upper()} x{len(ids)}: {format_case(case)}", file=stream)
        for line in first_difference(s, f):
            print(line, file=stream)
        if "stderr" in f:
            print("    " + f["stderr"][-1500:].replace("\n", "\n    "), file=stream)
        print(f"    reproduce: {repro_command(case['id'])}", file=stream)
        others = [i for i in ids if i != case["id"]]
        if others:
            print(
                f"    also: {', '.join(others[:6])}{' ...' if len(others) > 6 else ''}", file=stream
            )
    stats["seconds"] = time.monotonic() - t0
    return failures, stats


def run_both_stock(cases):
    """The stock loop's outcomes in a shifted child (other fd numbers, other hash seed)."""
    out = Child("asyncio", cases, shift=3).run()
    return out, None


def show_case(case_id):
    """--case: one case on both loops in fresh children, outcomes in full."""
    from cases import summarize

    case = generate(*map(int, case_id.split("/")))
    print(format_case(case))
    print(json.dumps(case))
    stock, ferro = run_both([case])
    s, f = stock.get(case_id), ferro.get(case_id)
    for name, outcome in (("stock (asyncio.SelectorEventLoop)", s), ("ferroloop", f)):
        print(f"\n--- {name}")
        if outcome is None:
            print("(no outcome)")
            continue
        for line in summarize(outcome):
            print("  " + line)
        if "stderr" in outcome:
            print(outcome["stderr"])
    result = compare(case, s, f)
    if result is None:
        print("\nsame outcome")
        return 0
    kind, keys = result
    if kind == "explained":
        for key in keys:
            print(f"\ndifference explained by [{key}] ({known.where(key)})")
        return 0
    print(f"\n{kind} difference, not explained")
    return 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=FLAVORS, help=argparse.SUPPRESS)
    parser.add_argument("--shift", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", help="seeds: 1,2,5-8 (default: fresh ones)")
    parser.add_argument("--cases", type=int, default=500, help="cases per seed (default 500)")
    parser.add_argument("--fresh", type=int, default=0, help="add this many fresh seeds")
    parser.add_argument("--seconds", type=float, help="fresh seeds until this much time is spent")
    parser.add_argument("--case", help="run one case (SEED/INDEX) and show both outcomes")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.shift)
        return 0
    if args.case:
        return show_case(args.case)
    seeds = parse_seeds(args.seeds) if args.seeds else []
    fresh = [random.SystemRandom().randrange(10**6, 10**9) for _ in range(args.fresh)]
    if fresh:
        print(f"differential: fresh seeds {','.join(map(str, fresh))}")
    # The fixed seeds and the fresh ones run apart: on the fresh seeds of a --fresh run (CI's),
    # a difference in behaviour or message is printed for whoever reads the log but fails nothing
    # (a new seed finds new combinations of the listed differences, and CI must not turn red at
    # random); a crash, a panic or a hang fails it. On the fixed seeds, and on the fresh seeds of
    # --seconds (make fuzz), every unexplained difference fails the run.
    rounds = [r for r in (seeds, fresh) if r]
    report_only = set(fresh)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    status = 0
    total = 0
    explained = defaultdict(int)
    start = time.monotonic()
    while True:
        if not rounds:
            if deadline is None and total:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            seed = random.SystemRandom().randrange(10**6, 10**9)
            print(f"differential: fresh seed {seed}")
            rounds.append([seed])
        batch = rounds.pop(0)
        ids = [f"{seed}/{i}" for seed in batch for i in range(args.cases)]
        failures, stats = fuzz(ids, verbose=args.verbose)
        total += stats["cases"]
        for k, v in stats["explained"].items():
            explained[k] += v
        if stats.get("unconfirmed"):
            print("differential: differences that did not show again alone (not failures):")
            for cid, lines in stats["unconfirmed"][:20]:
                print(f"  {cid}: {format_case(generate(*map(int, cid.split('/'))))[:150]}")
                for line in lines:
                    print(f"  {line[:200]}")
        if batch and set(batch) <= report_only:
            lenient = [f for f in failures if f[0] in ("behaviour", "message")]
            if lenient:
                print(
                    f"differential: {len(lenient)} difference(s) on fresh seeds, reported above, "
                    "not failing this run: add the seed to a fixed set once they are handled"
                )
            failures = [f for f in failures if f not in lenient]
        if failures:
            status = 1
        if deadline is None and not rounds:
            break
    elapsed = time.monotonic() - start
    print(
        f"differential: {total} cases on both loops in {elapsed:.1f}s; explained differences: "
        + (", ".join(f"{k} {v}" for k, v in sorted(explained.items())) or "none")
    )
    unused = known.pending_keys() - set(explained) - set(known.SEQUENCE_MATCHERS)
    if unused:
        print(f"differential: pending entries not seen in this run: {', '.join(sorted(unused))}")
    print("differential: " + ("FAILED" if status else "ok"))
    return status


if __name__ == "__main__":
    sys.exit(main())
