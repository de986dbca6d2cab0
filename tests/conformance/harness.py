"""Worker side of the conformance runner: patch asyncio, run one stdlib test module.

Invoked by run.py as ``python harness.py --module test_tasks --out results.jsonl ...``.
Every loop-creation point used by ``test.test_asyncio`` is redirected to ferroloop
(or, with FERROLOOP_CONFORMANCE_STOCK=1, to a marked subclass of the stock
SelectorEventLoop, to check the machinery itself).  Results are streamed to a JSON-lines
file, one record per test, so that the parent can survive a hang or a crash: a
faulthandler watchdog kills this process if one test runs longer than --timeout, and the
parent restarts the module after the test that was in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import json
import os
import re
import sys
import time
import traceback
import unittest
from asyncio import base_events, events

PACKAGE = "test.test_asyncio"
# 3.14 deprecates the policy system: its public names warn, the private ones do not.
POLICIES_DEPRECATED = sys.version_info >= (3, 14)

# Tests that drive utils.TestLoop through BaseEventLoop internals (loop._ready,
# loop._run_once) even without a fake clock: they keep the TestLoop.
# test_unix_events' pipe transport tests drive asyncio's own pipe transport classes (which
# ferroloop uses as they are) through TestLoop's reader/writer bookkeeping.
KEEP_TEST_LOOP = re.compile(
    r"\.(CoroutineGatherTests|FutureGatherTests|UnixReadPipeTransportTests"
    r"|UnixWritePipeTransportTests)\.|\.test_log_destroyed_pending_task$"
)
FIXTURE = "<fixture>"  # pseudo test id for loops created outside any test

# Loop kinds recorded per test.
PATCHED = "patched"  # a ferroloop Loop (or the marked stock loop in stock mode)
MOCK = "mock"  # the tests' own fake loops: utils.TestLoop, bare BaseEventLoop(), ...
STOCK = "stock"  # a real stdlib loop: a patch point was missed
OTHER = "other"  # some other AbstractEventLoop implementation


def stock_mode() -> bool:
    return os.environ.get("FERROLOOP_CONFORMANCE_STOCK", "") not in ("", "0")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class LoopTracker:
    """Remembers which kinds of loop each test created or ran."""

    def __init__(self) -> None:
        self.current = FIXTURE
        self.patched_types: tuple[type, ...] = ()
        self.seen: dict[str, dict[str, set[str]]] = {}

    def classify(self, loop: object) -> str:
        if self.patched_types and isinstance(loop, self.patched_types):
            return PATCHED
        cls = type(loop)
        if cls is base_events.BaseEventLoop or cls.__module__.startswith(("test.", "unittest.")):
            return MOCK
        if isinstance(loop, base_events.BaseEventLoop):
            return STOCK
        return OTHER

    def note(self, loop: object, running: bool = False) -> None:
        try:
            kind = self.classify(loop)
            per_test = self.seen.setdefault(self.current, {})
            per_test.setdefault(kind, set()).add(_qualname(type(loop)))
            if running:
                per_test.setdefault("ran", set()).add(kind)
        except Exception:  # never let bookkeeping break a test
            pass

    def pop(self, test_id: str) -> dict[str, list[str]]:
        """{kind: [loop classes], "ran": [kinds of the loops that were run]}."""
        return {k: sorted(v) for k, v in self.seen.pop(test_id, {}).items()}


TRACKER = LoopTracker()


def install_patches(stock: bool, real_test_loops: bool = True) -> dict[str, str]:
    """Redirect every loop-creation point used by test.test_asyncio. Returns a description."""
    from asyncio import unix_events

    # --- tracking hooks (installed first, so ferroloop sees them if it binds names) ---
    orig_base_init = base_events.BaseEventLoop.__init__

    def base_init(self, *args, **kwargs):
        orig_base_init(self, *args, **kwargs)
        TRACKER.note(self)

    base_events.BaseEventLoop.__init__ = base_init

    orig_set_running = events._set_running_loop

    def _set_running_loop(loop):
        if loop is not None:
            TRACKER.note(loop, running=True)
        orig_set_running(loop)

    events._set_running_loop = _set_running_loop
    asyncio._set_running_loop = _set_running_loop

    # --- the loop implementation under test ---
    if stock:

        class StockPatchedLoop(unix_events._UnixSelectorEventLoop):
            """Stock selector loop, marked so the tracker can tell it was patched in."""

        StockPatchedLoop.__module__ = "conformance"
        loop_types: tuple[type, ...] = (StockPatchedLoop,)
        base_policy: type = unix_events._UnixDefaultEventLoopPolicy

        def make_loop():
            return StockPatchedLoop()

        class SelectorEventLoop(StockPatchedLoop):
            """asyncio.SelectorEventLoop replacement (stock mode honours the selector)."""

        SelectorEventLoop.__module__ = "conformance"
        impl = "stock SelectorEventLoop (FERROLOOP_CONFORMANCE_STOCK=1)"
    else:
        import ferroloop

        loop_types = (ferroloop.Loop,)
        # The class itself, without the deprecation warning of the public name on 3.14+.
        base_policy = ferroloop._policy()

        def make_loop():
            return ferroloop.new_event_loop()

        class _ShimMeta(type):
            def __instancecheck__(cls, obj):
                return isinstance(obj, ferroloop.Loop)

            def __subclasscheck__(cls, sub):
                return issubclass(sub, ferroloop.Loop)

        class SelectorEventLoop(metaclass=_ShimMeta):
            """asyncio.SelectorEventLoop(selector=None) -> a ferroloop Loop (selector dropped)."""

            def __new__(cls, selector=None):
                if selector is not None:
                    selector.close()
                return make_loop()

        # Note creations directly too, in case Loop does not go through the policy.
        try:
            orig_loop_init = ferroloop.Loop.__init__

            def loop_init(self, *args, **kwargs):
                orig_loop_init(self, *args, **kwargs)
                TRACKER.note(self)

            ferroloop.Loop.__init__ = loop_init
        except (AttributeError, TypeError):  # an immutable (Rust) type: rely on factories
            pass
        impl = f"ferroloop {getattr(ferroloop, '__version__', '')} ({ferroloop.__file__})"

    TRACKER.patched_types = loop_types

    try:

        class PatchedPolicy(base_policy):
            def new_event_loop(self):
                loop = super().new_event_loop()
                TRACKER.note(loop)
                return loop

        if stock:
            PatchedPolicy._loop_factory = loop_types[0]
        PatchedPolicy.__name__ = PatchedPolicy.__qualname__ = "DefaultEventLoopPolicy"
        PatchedPolicy.__module__ = "conformance"
    except TypeError:  # policy type not subclassable
        PatchedPolicy = base_policy

    # DefaultEventLoopPolicy: events._init_event_loop_policy() does
    # `from . import DefaultEventLoopPolicy` (3.14+: `from .unix_events import
    # _DefaultEventLoopPolicy`) whenever the policy is None, so every
    # `asyncio.set_event_loop_policy(None)` (each module's tearDownModule, many tearDowns)
    # falls back to our policy, not to the stock one. On 3.14+ the public names are left to
    # asyncio's module __getattr__, which returns the private ones with its deprecation warning
    # (tests assert that warning).
    if POLICIES_DEPRECATED:
        unix_events._DefaultEventLoopPolicy = PatchedPolicy
        events._set_event_loop_policy(PatchedPolicy())
    else:
        asyncio.DefaultEventLoopPolicy = PatchedPolicy
        unix_events.DefaultEventLoopPolicy = PatchedPolicy
        asyncio.set_event_loop_policy(PatchedPolicy())
    get_policy = (
        events._get_event_loop_policy if POLICIES_DEPRECATED else events.get_event_loop_policy
    )

    # new_event_loop: still asks the *current* policy (tests that install their own policy,
    # e.g. test_runners.TestPolicy, must keep getting their loops), but records the result.
    # asyncio.Runner(loop_factory=None) and hence asyncio.run() and
    # unittest.IsolatedAsyncioTestCase call `events.new_event_loop()` at call time, so this
    # also covers the Runner's default loop factory.
    def new_event_loop():
        loop = get_policy().new_event_loop()
        TRACKER.note(loop)
        return loop

    events.new_event_loop = new_event_loop
    asyncio.new_event_loop = new_event_loop

    # SelectorEventLoop(selector): test_events, test_sock_lowlevel, test_sendfile,
    # test_server, test_buffered_proto, ... build their loops with it.
    asyncio.SelectorEventLoop = SelectorEventLoop
    unix_events.SelectorEventLoop = SelectorEventLoop
    # asyncio.EventLoop (3.13+, the platform's default loop class): 3.14's tests pass it as
    # IsolatedAsyncioTestCase.loop_factory and construct it directly.
    if hasattr(unix_events, "EventLoop"):
        asyncio.EventLoop = SelectorEventLoop
        unix_events.EventLoop = SelectorEventLoop

    # test.test_asyncio.utils.TestCase.close_loop is left as it is: it reads
    # loop._default_executor, which ferroloop.Loop has too.
    from test.test_asyncio import utils as test_utils

    # utils.TestCase.new_test_loop(gen) builds utils.TestLoop, a BaseEventLoop with a fake
    # clock driven by `gen`.  Without a generator (test_futures' and test_tasks' setUp) the
    # fake clock cannot be used at all (a timer would exhaust the generator), so such a loop
    # is just "some loop": hand out the loop under test instead.  With a generator the
    # test needs virtual time and keeps the TestLoop (counted as a mock loop).
    if real_test_loops:
        orig_new_test_loop = test_utils.TestCase.new_test_loop

        def new_test_loop(self, gen=None):
            if gen is not None or KEEP_TEST_LOOP.search(TRACKER.current):
                return orig_new_test_loop(self, gen)
            loop = make_loop()
            self.set_event_loop(loop)
            return loop

        test_utils.TestCase.new_test_loop = new_test_loop

    # Sanity: the names the stdlib resolves at call time now point at our objects.
    from asyncio import runners

    assert runners.events.new_event_loop is new_event_loop
    assert events._event_loop_policy.__class__ is PatchedPolicy
    return {"impl": impl, "policy": _qualname(PatchedPolicy)}


def _fixture_target(description: str) -> tuple[str, str]:
    """'setUpClass (pkg.mod.Cls)' -> ('setUpClass', 'pkg.mod.Cls')."""
    name, _, rest = description.partition(" (")
    return name, rest.rstrip(")")


def _short_reason(err) -> str:
    exc_type, exc, _ = err
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = exc_type.__name__ if exc_type else "Error"
    return f"{name}: {msg}"[:300] if msg else name


def _last_frame(err) -> str:
    tb = err[2]
    frames = traceback.extract_tb(tb) if tb else []
    if not frames:
        return ""
    fr = frames[-1]
    return f"{os.path.basename(fr.filename)}:{fr.lineno} in {fr.name}"


class StreamingResult(unittest.TestResult):
    """Writes one JSON record per finished test to ``out``."""

    def __init__(
        self,
        out,
        planned: list[str],
        timeout: float,
        hangs: set[str] = frozenset(),
        hangs_timeout: float = 0.0,
    ) -> None:
        super().__init__()
        self.out = out
        self.planned = planned
        self._current_test = None
        self._last_loops: dict[str, dict] = {}
        self.timeout = timeout
        # Expected failures known to hang: killed sooner (run.py's HANGS_TAG).
        self.hangs = hangs
        self.hangs_timeout = hangs_timeout
        self.reported: set[str] = set()
        self._outcome: dict | None = None
        self._t0 = 0.0

    def _emit(self, rec: dict) -> None:
        self.out.write(json.dumps(rec) + "\n")
        self.out.flush()

    def _arm(self, test_id: str | None = None) -> None:
        limit = self.hangs_timeout if test_id in self.hangs else self.timeout
        faulthandler.dump_traceback_later(limit, exit=True, file=sys.stderr)

    def startTest(self, test):
        super().startTest(test)
        tid = test.id()
        TRACKER.current = tid
        self._outcome = {"outcome": "pass"}
        self._t0 = time.monotonic()
        sys.stderr.write(f"\n=== START {tid}\n")
        sys.stderr.flush()
        self._emit({"e": "start", "id": tid})
        self._arm(tid)

    def stopTest(self, test):
        super().stopTest(test)
        tid = test.id()
        rec = {"e": "result", "id": tid, "dur": round(time.monotonic() - self._t0, 3)}
        rec.update(self._outcome or {"outcome": "pass"})
        rec["loops"] = TRACKER.pop(tid)
        self._last_loops = {tid: rec["loops"]}
        TRACKER.current = FIXTURE
        self.reported.add(tid)
        self._emit(rec)
        self._outcome = None
        self._arm()

    def _set(self, outcome: str, err=None, **extra) -> None:
        rec = {"outcome": outcome, **extra}
        if err is not None:
            rec["msg"] = _short_reason(err)
            rec["where"] = _last_frame(err)
            rec["tb"] = self._exc_info_to_string(err, self._current_test)[-6000:]
        if self._outcome is None or self._outcome["outcome"] in ("pass", "xfail"):
            self._outcome = rec

    def escaped(self, test, err) -> None:
        tid = test.id()
        rec = {"e": "result", "id": tid, "dur": 0.0, "loops": self._last_loops.get(tid, {})}
        rec["outcome"] = "error"
        rec["msg"] = "escaped the test (after stopTest): " + _short_reason(err)
        rec["where"] = _last_frame(err)
        rec["tb"] = "".join(traceback.format_exception(*err))[-6000:]
        self._emit(rec)
        TRACKER.current = FIXTURE
        self._arm()

    # unittest hooks -----------------------------------------------------------------
    def _holder(self, test, outcome, err=None, reason=None) -> bool:
        """Class/module fixture errors and skips arrive on an _ErrorHolder, not a TestCase."""
        if isinstance(test, unittest.TestCase):
            return False
        name, target = _fixture_target(test.id())
        rec = {"outcome": outcome}
        if err is not None:
            rec["msg"] = f"{name}: {_short_reason(err)}"
            rec["where"] = _last_frame(err)
            rec["tb"] = "".join(traceback.format_exception(*err))[-6000:]
        if reason is not None:
            rec["msg"] = f"{name}: {reason}"
        if name.startswith("setUp"):
            # The tests behind a failed/skipped setUpClass/setUpModule never start.
            victims = [t for t in self.planned if t.startswith(target + ".")]
            victims = [t for t in victims if t not in self.reported]
        else:
            victims = [f"{target}.{name}"]
        for tid in victims:
            self.reported.add(tid)
            self._emit({"e": "result", "id": tid, "dur": 0.0, "loops": {}, **rec})
        return True

    def addError(self, test, err):
        if self._holder(test, "error", err=err):
            return
        self._current_test = test
        self._set("error", err)

    def addFailure(self, test, err):
        self._current_test = test
        self._set("fail", err)

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self._current_test = test
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._set(kind, err, subtest=str(subtest)[:200])

    def addSkip(self, test, reason):
        if self._holder(test, "skip", reason=reason):
            return
        self._set("skip", msg=str(reason)[:300])

    def addExpectedFailure(self, test, err):
        self._set("xfail", msg="unittest expectedFailure")

    def addUnexpectedSuccess(self, test):
        self._set("xpass", msg="unittest unexpected success (test is marked expectedFailure)")


class RobustSuite(unittest.TestSuite):
    """TestSuite.run, except that an exception escaping a test's own machinery (e.g.
    IsolatedAsyncioTestCase closing its Runner after stopTest) fails that test instead of
    killing the whole worker."""

    def run(self, result, debug=False):
        top_level = False
        if getattr(result, "_testRunEntered", False) is False:
            result._testRunEntered = top_level = True
        for test in self:
            if result.shouldStop:
                break
            self._tearDownPreviousClass(test, result)
            self._handleModuleFixture(test, result)
            self._handleClassSetUp(test, result)
            result._previousTestClass = test.__class__
            if getattr(test.__class__, "_classSetupFailed", False) or getattr(
                result, "_moduleSetUpFailed", False
            ):
                continue
            try:
                test(result)
            except Exception:
                result.escaped(test, sys.exc_info())
        if top_level:
            self._tearDownPreviousClass(None, result)
            self._handleModuleTearDown(result)
            result._testRunEntered = False
        return result


def _iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _iter_tests(item)
        else:
            yield item


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip", help="JSON file: list of test ids not to run")
    ap.add_argument("--only", help="JSON file: list of test ids to run (retries)")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--keep-test-loops", action="store_true")
    ap.add_argument("--hangs", help="JSON file: test ids that hang (killed after --hangs-timeout)")
    ap.add_argument("--hangs-timeout", type=float, default=3.0)
    args = ap.parse_args(argv)

    # Covers the imports too; re-armed at every test boundary.
    faulthandler.enable(file=sys.stderr)
    faulthandler.dump_traceback_later(max(args.timeout, 60.0), exit=True, file=sys.stderr)

    out = open(args.out, "a", encoding="utf-8")
    stock = stock_mode()
    info = install_patches(stock, real_test_loops=not args.keep_test_loops)

    modname = f"{PACKAGE}.{args.module}"
    try:
        module = importlib.import_module(modname)
    except unittest.SkipTest as exc:
        out.write(json.dumps({"e": "module_skip", "msg": str(exc)}) + "\n")
        out.close()
        os._exit(0)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    tests = list(_iter_tests(suite))
    collected = [t.id() for t in tests]
    skip = set(json.load(open(args.skip))) if args.skip else set()
    only = set(json.load(open(args.only))) if args.only else None
    tests = [t for t in tests if t.id() not in skip and (only is None or t.id() in only)]
    out.write(json.dumps({"e": "collected", "ids": collected, "pid": os.getpid(), **info}) + "\n")
    out.flush()

    hangs = set(json.load(open(args.hangs))) if args.hangs else set()
    result = StreamingResult(out, [t.id() for t in tests], args.timeout, hangs, args.hangs_timeout)
    result._arm()
    RobustSuite(tests).run(result)
    faulthandler.cancel_dump_traceback_later()
    leftover = TRACKER.pop(FIXTURE)
    out.write(json.dumps({"e": "done", "fixture_loops": leftover}) + "\n")
    out.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: leaked threads or loop finalizers must not hang the worker.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
