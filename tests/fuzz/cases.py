"""Running one differential case in a child process: build the target, make the calls in the
case's mode, await what they return, let the loop settle, tear down; the outcome is plain data.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import sys
import threading
import time
import weakref

from fixtures import (
    AWAIT_TIMEOUT,
    CaseTimeout,
    Env,
    describe_exc,
    fd_kind,
    norm,
    open_fds,
    record_warnings,
)
from surface import RUNS_LOOP

# A case blocked in Python code (a blocking socket, a lock) is stopped by SIGALRM after this
# long; one blocked in native code that never checks for signals is the parent's to see (hang).
CASE_ALARM = 5.0


def _alarm(signum, frame):
    raise CaseTimeout()


def _invoke(env, target, call):
    """Make one call: (record, raw result or None)."""
    name, arg_specs, kw_specs = call
    try:
        args = [env.values(s) for s in arg_specs]
        kwargs = {k: env.values(s) for k, s in kw_specs.items()}
    except CaseTimeout:
        raise
    except BaseException as e:
        return ["setup-arg", describe_exc(e)], None
    try:
        if name.startswith("set:"):
            setattr(target, name[4:], *args, **kwargs)
            value = None
        elif name.startswith("get:"):
            value = getattr(target, name[4:])
        elif name == "repr":
            value = repr(target)
        elif name == "hash":
            return ["ret", "<int>" if isinstance(hash(target), int) else "?"], None
        elif name == "weakref":
            value = weakref.ref(target)
            return ["ret", "<weakref>" if value() is target else "<dead weakref>"], None
        else:
            value = getattr(target, name)(*args, **kwargs)
    except CaseTimeout:
        raise
    except BaseException as e:
        return describe_exc(e), None
    return ["ret", norm(value, env)], value


def _awaitable(value):
    return asyncio.iscoroutine(value) or asyncio.isfuture(value)


def _step(coro):
    """One step of a coroutine that no loop can run (the loop is closed)."""
    if not asyncio.iscoroutine(coro):
        return ["future", coro.done()]
    try:
        coro.send(None)
    except StopIteration as e:
        return ["ret", norm(e.value)]
    except CaseTimeout:
        raise
    except BaseException as e:
        return describe_exc(e)
    finally:
        coro.close()
    return ["pending"]


def _await(env, value):
    """Await a call's result as the harness would: bounded; a closed loop takes one step."""
    if env.loop.is_closed():
        return _step(value)
    if env.loop.is_running():
        return ["running"]
    try:
        r = env.run(value)
    except CaseTimeout:
        raise
    except BaseException as e:
        return describe_exc(e)
    if r[0] == "ret":
        return ["ret", norm(r[1], env)]
    return r


def _calls(env, target, calls, results):
    """The case's calls one after another, each result recorded; returns awaitables left."""
    pending = []
    for call in calls:
        record, value = _invoke(env, target, call)
        results.append(record)
        if _awaitable(value):
            pending.append((len(results) - 1, value))
    return pending


def _finish_awaits(env, pending, results):
    for i, value in pending:
        results[i] = results[i] + [_await(env, value)]


def _mode_direct(env, target, case, results):
    if any(c[0] in RUNS_LOOP for c in case["calls"]):
        # Nothing else would ever stop run_forever(), or run_until_complete() of a task that
        # sleeps for an hour: both loops get the same timer, before the calls.
        env.loop.call_later(AWAIT_TIMEOUT, env.loop.stop)
    _finish_awaits(env, _calls(env, target, case["calls"], results), results)


def _mode_closed(env, target, case, results):
    env.loop.close()
    _finish_awaits(env, _calls(env, target, case["calls"], results), results)


def _mode_running(env, target, case, results):
    async def driver():
        await asyncio.sleep(0)
        pending = _calls(env, target, case["calls"], results)
        for i, value in pending:
            try:
                fut = asyncio.ensure_future(value)
                await asyncio.wait({fut}, timeout=AWAIT_TIMEOUT)
                r = ["ret", norm(fut.result(), env)] if fut.done() else ["pending"]
            except CaseTimeout:
                raise
            except BaseException as e:
                r = describe_exc(e)
            results[i] = results[i] + [r]

    _run_driver(env, driver())


def _run_driver(env, coro):
    try:
        env.outer_ctx.run(env.loop.run_until_complete, coro)
    except CaseTimeout:
        raise
    except BaseException as e:
        env.event("run", describe_exc(e))


def _mode_thread(env, target, case, results, running=True):
    pending = []
    done = threading.Event()

    def work():
        try:
            pending.extend(_calls(env, target, case["calls"], results))
        finally:
            done.set()
            if running:
                try:
                    env.loop.call_soon_threadsafe(lambda: None)
                except BaseException:
                    pass

    t = threading.Thread(target=work, daemon=True)
    env.threads.append(t)
    if running:

        async def driver():
            t.start()
            while not done.is_set():
                await asyncio.sleep(0.001)

        _run_driver(env, driver())
    else:
        t.start()
    # A call that runs the loop on that thread (run_forever) is stopped as a user would stop
    # it, from here, so that the thread's other calls run too.
    deadline = time.monotonic() + CASE_ALARM - 1
    while t.is_alive() and time.monotonic() < deadline:
        t.join(0.05)
        if t.is_alive() and env.loop.is_running():
            try:
                env.loop.call_soon_threadsafe(env.loop.stop)
            except BaseException:
                pass
    if t.is_alive():
        env.event("thread", "hung")
        return
    _finish_awaits(env, pending, results)


_TRIGGERS = {
    "connection_made": None,
    "data_received": "data",
    "get_buffer": "data",
    "buffer_updated": "data",
    "eof_received": "eof",
    "connection_lost": "close",
}


def _mode_callback(env, target_name, case, results):
    point = case["mode"][3:]
    buffered = point in ("get_buffer", "buffer_updated")
    pending = []
    fired = []
    target_box = []

    def at_point():
        fired.append(True)
        target = target_box[0] if target_box else env.fixtures["made:hk"]
        pending.extend(_calls(env, target, case["calls"], results))

    own = target_name.startswith("tr_unix")
    if not own:
        try:
            target_box.append(env.fixture(target_name))
        except CaseTimeout:
            raise
        except BaseException as e:
            results.append(["setup", describe_exc(e)])
            return
    env.point = (point, at_point)
    try:
        env.hook_transport(buffered)
    except CaseTimeout:
        raise
    except BaseException as e:
        results.append(["setup", describe_exc(e)])
        return
    trigger = _TRIGGERS[point]
    peer = env.peers["hk"]
    try:
        if trigger == "data":
            peer.send(b"ping")
        elif trigger == "eof":
            peer.shutdown(socket.SHUT_WR)
        elif trigger == "close":
            peer.close()
    except OSError as e:
        env.event("trigger", describe_exc(e))

    async def wait_fired():
        for _ in range(200):
            if fired:
                break
            await asyncio.sleep(0.001)

    if not env.loop.is_closed() and not env.loop.is_running():
        _run_driver(env, wait_fired())
    if not fired:
        env.event("point", "not reached")
        env.point = None
    _finish_awaits(env, pending, results)


def _make_target(env, case):
    name = case["target"]
    if case["mode"].startswith("cb:") and name.startswith("tr_unix"):
        return None  # the hook transport is the target, made by the callback mode
    return env.fixture(name)


def run_case(case, flavor, tmpdir):
    """Run ``case`` on a fresh loop of ``flavor``: its outcome, as plain data."""
    outcome = {"calls": []}
    fds_before = open_fds()
    threads_before = threading.active_count()
    cm, caught = record_warnings()
    env = None
    signal.signal(signal.SIGALRM, _alarm)
    # Again every second after the first: an alarm raised where something catches it anyway
    # (a hostile callback's except clause) must not leave the case to block for ever.
    signal.setitimer(signal.ITIMER_REAL, CASE_ALARM, 1.0)
    try:
        try:
            env = Env(flavor, tmpdir, debug=case["debug"])
            target = _make_target(env, case)
        except CaseTimeout:
            raise
        except BaseException as e:
            outcome["setup"] = describe_exc(e)
        else:
            mode = case["mode"]
            results = outcome["calls"]
            if mode == "direct":
                _mode_direct(env, target, case, results)
            elif mode == "closed":
                _mode_closed(env, target, case, results)
            elif mode == "running":
                _mode_running(env, target, case, results)
            elif mode == "thread":
                _mode_thread(env, target, case, results)
            elif mode == "thread-idle":
                _mode_thread(env, target, case, results, running=False)
            else:
                _mode_callback(env, case["target"], case, results)
            env.settle()
            env.drain_peers()
    except CaseTimeout:
        outcome["timeout"] = True
        if env is not None:
            env.timed_out = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if env is not None:
        try:
            signal.setitimer(signal.ITIMER_REAL, CASE_ALARM, 1.0)
            env.teardown()
        except CaseTimeout:
            outcome["teardown"] = "timeout"
        except BaseException as e:
            outcome["teardown"] = describe_exc(e)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        outcome["events"] = env.events
        outcome["unraisable"] = env.unraisable
        env = None
        _join_helper_threads()
        # What the case left for the collector is collected inside the case: its warnings and
        # unraisable exceptions are its own, not the next case's.
        gc.collect()
        outcome["unraisable"] = sorted(outcome["unraisable"])
    cm.__exit__(None, None, None)
    # Each kind once: a watcher that fails at every iteration warns as many times as there
    # were iterations.
    outcome["warnings"] = sorted(
        {f"{w.category.__name__}: {_warning_stem(str(w.message))}" for w in caught}
    )
    leaked = sorted(open_fds() - fds_before)
    outcome["leaked_fds"] = sorted(fd_kind(fd) for fd in leaked)
    _close_leaked(leaked)
    # Threads a case started (executors shut down without waiting) end on their own; their
    # count is not compared: asyncio's and ferroloop's executors are the same code.
    del threads_before
    return outcome


def _join_helper_threads():
    # Threads that hold the case's objects until they end (a child watcher's waitpid, an
    # executor's worker finishing its job): their garbage is this case's, not the next one's.
    for t in threading.enumerate():
        helper = "waitpid" in t.name or t.name.startswith(("asyncio", "ThreadPoolExecutor"))
        if helper and t is not threading.current_thread():
            t.join(0.5)


def _warning_stem(message):
    import re

    return re.split(r"[<(\[]", message, maxsplit=1)[0].strip()[:120]


def _close_leaked(fds):
    # Keep the child's fd table as it was, so later cases see the same numbers on both loops.
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def summarize(outcome):
    """A short human rendering of an outcome, for reports."""
    lines = []
    for key in ("setup", "timeout", "teardown"):
        if key in outcome:
            lines.append(f"{key}: {outcome[key]}")
    for i, r in enumerate(outcome.get("calls", [])):
        lines.append(f"call {i}: {r}")
    for e in outcome.get("events", []):
        lines.append(f"event: {e}")
    for key in ("unraisable", "warnings", "leaked_fds"):
        if outcome.get(key):
            lines.append(f"{key}: {outcome[key]}")
    return lines


if __name__ == "__main__":
    sys.exit("run tests/fuzz/differential.py")
