"""The differences from the stock loop that the fuzzers accept, each recognised by a matcher.

A matcher is active only while its key is listed, either in docs/differences.md (by design, with
the reason a user would accept; the README's "Known differences" section is that file) or in
tests/fuzz/pending.txt (being fixed elsewhere; the file empties when the fix is merged). A
difference no active matcher explains fails the fuzz run; tests/test_docs.py checks that every
matcher's key is listed in exactly one of the two files.

Matchers are narrow on purpose: each looks at the calls of the case and at what each loop
answered, so that an unrelated difference in the same case is not swallowed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys

PY = sys.version_info[:2]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIFFERENCES = os.path.join(ROOT, "docs", "differences.md")
PENDING = os.path.join(ROOT, "tests", "fuzz", "pending.txt")

_DOC_KEY = re.compile(r"^- \[`([a-z0-9-]+)`\]", re.M)
_PENDING_KEY = re.compile(r"^([a-z0-9-]+):", re.M)


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def documented_keys():
    return _DOC_KEY.findall(_read(DIFFERENCES))


def pending_keys():
    return set(_PENDING_KEY.findall(_read(PENDING)))


def where(key):
    if key in documented_keys():
        return "docs/differences.md"
    if key in pending_keys():
        return "tests/fuzz/pending.txt"
    return "nowhere"


MATCHERS = {}


def matcher(key):
    """Register ``fn(case, stock, ferro)`` under ``key``: it edits the two outcomes (copies) to
    take out the difference it knows, and returns True when it changed something."""

    def register(fn):
        MATCHERS[key] = fn
        return fn

    return register


_active = None


def active():
    global _active
    if _active is None:
        listed = set(documented_keys()) | pending_keys()
        _active = {k: fn for k, fn in MATCHERS.items() if k in listed}
    return _active


def explain(case, stock, ferro, same):
    """The keys of the active matchers that, together, explain why ``stock`` and ``ferro``
    differ (``same(stock, ferro)`` after their edits), or None."""
    s, f = copy.deepcopy(stock), copy.deepcopy(ferro)
    c = Case(case)
    used = []
    for _ in range(2):
        for key, fn in active().items():
            if fn(c, Outcome(s), Outcome(f)):
                if key not in used:
                    used.append(key)
                _tidy(s)
                _tidy(f)
                if same(s, f):
                    return used
    return None


def _tidy(outcome):
    """What the recording does to an outcome, done again after a matcher's edit: repeats
    folded (see fixtures.Env._append), warnings sorted and unique."""
    events = outcome.get("events")
    if events:
        folded = []
        for event in events:
            folded.append(event)
            for k in (1, 2, 3):
                if len(folded) >= 2 * k and folded[-k:] == folded[-2 * k : -k]:
                    del folded[-k:]
                    break
        events[:] = folded
    if outcome.get("warnings"):
        outcome["warnings"] = sorted(set(outcome["warnings"]))


# -- views the matchers read ----------------------------------------------------------------


class Case:
    def __init__(self, case):
        self.raw = case
        self.target = case["target"]
        self.mode = case["mode"]
        self.debug = case["debug"]
        self.calls = case["calls"]

    def methods(self):
        return [c[0] for c in self.calls]

    def specs(self):
        """Every value spec the case's calls use."""
        out = []
        for _, args, kwargs in self.calls:
            out.extend(args)
            out.extend(kwargs.values())
        return out


class Outcome:
    def __init__(self, outcome):
        self.raw = outcome
        self.calls = outcome.get("calls", [])
        self.events = outcome.get("events", [])

    def excs(self):
        """(type, message) of every exception the calls raised or their awaits ended with."""
        out = []
        for record in self.calls:
            for part in _walk(record):
                out.append(part)
        return out


def _walk(record):
    if isinstance(record, list):
        if len(record) == 3 and record[0] == "exc":
            yield (record[1], record[2])
        for item in record:
            yield from _walk(item)


# -- the matchers ---------------------------------------------------------------------------


def _is_exc(record, type_prefix=None, message=None):
    if not (isinstance(record, list) and len(record) == 3 and record[0] == "exc"):
        return False
    if type_prefix is not None and not record[1].startswith(type_prefix):
        return False
    if message is not None and not re.search(message, record[2]):
        return False
    return True


def _calls(case, stock, ferro, methods=None):
    """(index, call, stock record, ferro record) for the case's calls (of ``methods``)."""
    for i, call in enumerate(case.calls):
        if methods is not None and call[0] not in methods:
            continue
        if i < len(stock.calls) and i < len(ferro.calls):
            yield i, call, stock.calls[i], ferro.calls[i]


def _strings(data, fn):
    """``data`` with ``fn`` applied to every string in it."""
    if isinstance(data, str):
        return fn(data)
    if isinstance(data, list):
        return [_strings(d, fn) for d in data]
    if isinstance(data, dict):
        return {k: _strings(v, fn) for k, v in data.items()}
    return data


def _rewrite(outcome, fn):
    """Apply ``fn`` to every string of ``outcome`` in place; True if anything changed."""
    before = outcome.raw
    after = _strings(before, fn)
    if after == before:
        return False
    before.clear()
    before.update(after)
    outcome.calls = before.get("calls", [])
    outcome.events = before.get("events", [])
    return True


def _drop_events(outcome, predicate, count=None):
    """Remove (up to ``count``) events matching ``predicate``; True if any was removed."""
    kept, removed = [], 0
    for event in outcome.events:
        if predicate(event) and (count is None or removed < count):
            removed += 1
        else:
            kept.append(event)
    outcome.events[:] = kept
    return removed > 0


def _callback_failure_log(event):
    # What the stock loop logs when a handle's callback cannot be called.
    return (
        isinstance(event, list)
        and event[:1] == ["log"]
        and event[3].startswith("Exception in callback")
    )


SCHEDULING = {
    "add_done_callback",  # of a done future: its callback is scheduled at once
    "call_soon",
    "call_later",
    "call_at",
    "call_soon_threadsafe",
    "add_reader",
    "add_writer",
    "add_signal_handler",
}
_NONCALLABLE = r"^(a callable object was expected by|coroutines cannot be used with) \w+\(\)"


_INTERNAL_CALLBACK = re.compile(
    r"Exception in callback _?[A-Z]\w*(Transport|Watcher|Protocol|Loop|Server)\w*\."
)


def _failure_report(event):
    # How the stock loop reports a handle whose callback could not be run: its log record, or
    # the events of a custom exception handler (and the log of one that raised).
    return _callback_failure_log(event) or (
        isinstance(event, list)
        and (
            event[:1] == ["handler_raise"]
            or (event[:1] == ["handler"] and "Exception in callback" in json.dumps(event))
            or (event[:1] == ["log"] and event[3].startswith("Unhandled error in exception"))
        )
    )


def _drop_callback_failure(stock, ferro, count):
    """Drop stock's reports of failed callbacks that ferroloop's outcome has not (up to
    ``count`` failures): the non-callable was never scheduled there."""
    theirs = [e for e in ferro.events if _failure_report(e)]
    extra = []
    for e in stock.events:
        if _failure_report(e):
            if e in theirs:
                theirs.remove(e)
            else:
                extra.append(e)
    # The loop's own callbacks (a transport's, the child watcher's) failing is another matter:
    # those go last.
    extra.sort(key=lambda e: bool(_INTERNAL_CALLBACK.search(json.dumps(e))))
    if count is not None:
        # One failure is a log record, or a handler's event and, if it raised, a log record.
        extra = extra[: count * 2] if any(e[:1] == ["handler_raise"] for e in extra) else extra
        extra = extra[:count] if not any(e[:1] != ["log"] for e in extra) else extra
    for e in extra:
        stock.events.remove(e)
    return bool(extra)


def _failed_repr(event):
    # A callback whose repr (or __qualname__...) raises: asyncio's handle fails again while
    # logging its failure, and that error (the evil dunders raise Boom) leaves run_forever().
    return event[:1] in (["run"], ["settle"]) and '"Boom"' in json.dumps(event)


@matcher("noncallable-typeerror")
def _noncallable(case, stock, ferro):
    """ferroloop raised its TypeError for a non-callable at once (before looking at the other
    arguments); stock scheduled it and, if it came due while the case ran, logged the failed
    call, or raised for another argument."""
    changed = False
    for i, call, s, f in _calls(case, stock, ferro, SCHEDULING):
        if _is_exc(f, "TypeError", _NONCALLABLE) and s != f:
            if call[0] in ("add_reader", "add_writer") and any(
                c[0] == call[0] and c[1][:1] == call[1][:1] for c in case.calls[:i]
            ):
                # It replaced an earlier watcher of the same fd on the stock loop; that one
                # still runs on ferroloop: what follows is stock's.
                return _become(ferro, stock)
            ferro.calls[i] = s
            if not _is_exc(s):
                # A reader or writer fails again at every iteration; a handle once.
                once = call[0] not in ("add_reader", "add_writer")
                _drop_callback_failure(stock, ferro, 1 if once else None)
                _drop_events(stock, _failed_repr)
                # A coroutine function called by a reader: a coroutine never awaited each time.
                stock.raw["warnings"] = [
                    w
                    for w in stock.raw.get("warnings", [])
                    if w in ferro.raw.get("warnings", []) or not w.startswith("RuntimeWarning: co")
                ]
                if call[0] == "add_signal_handler":
                    # The handler is installed on one loop only.
                    for j, _, s2, _ in _calls(case, stock, ferro, {"remove_signal_handler"}):
                        if j > i:
                            ferro.calls[j] = s2
            changed = True
    return changed


# The classes that answer for the stock loop and for ferroloop in messages and reprs.
_CLASS_NAMES = re.compile(
    r"\b(_UnixSelectorEventLoop|BaseSelectorEventLoop|BaseEventLoop|_SelectorSocketTransport"
    r"|_SelectorTransport|NetworkMixin|UnixMixin|LoopCore|SocketTransportCore|SocketTransport"
    r"|Loop)\b"
)


@matcher("class-names")
def _class_names(case, stock, ferro):
    def fn(text):
        return _CLASS_NAMES.sub("<LoopClass>", text)

    return _rewrite(stock, fn) | _rewrite(ferro, fn)


# CPython's wordings of "wrong arguments" for Python functions and for native ones (PyO3's).
_ARITY = re.compile(
    r"^(wrapper )?(\S+\(\) )?(takes (no|\d+|from \d+ to \d+|at most \d+|exactly one) (positional )?"
    r"arguments?( \(\d+ given\)| but \d+( positional arguments?)?( \(and \d+ keyword-only "
    r"arguments?\))? (was|were) given)?|got an unexpected keyword argument '\w+'|takes no "
    r"keyword arguments|missing (\d+ )?required (positional|keyword-only)? ?arguments?.*"
    r"|got multiple values for argument '\w+'|expected \d+ arguments?, got \d+)$"
)


@matcher("native-signature-errors")
def _signature_errors(case, stock, ferro):
    def fn(text):
        return "<wrong arguments>" if _ARITY.match(text) else text

    return _rewrite(stock, fn) | _rewrite(ferro, fn)


@matcher("handle-get-context")
def _handle_get_context(case, stock, ferro):
    if PY >= (3, 12) or case.target not in ("handle", "timer"):
        return False
    changed = False
    for i, _, s, f in _calls(case, stock, ferro, {"get_context"}):
        if _is_exc(s, "AttributeError", "get_context") and s != f:
            stock.calls[i] = f
            changed = True
    return changed


@matcher("server-close-clients")
def _server_close_clients(case, stock, ferro):
    if PY >= (3, 13) or case.target != "server":
        return False
    changed = False
    for i, _, s, f in _calls(case, stock, ferro, {"close_clients", "abort_clients"}):
        if _is_exc(s, "AttributeError", "_clients'") and not _is_exc(f, "AttributeError"):
            stock.calls[i] = f
            changed = True
    return changed


@matcher("context-type")
def _context_type(case, stock, ferro):
    """A callback scheduled with a context= that is not a contextvars.Context fails when it runs
    on both loops: AttributeError (no .run) on stock, TypeError on ferroloop."""
    contexts = {c[2].get("context") for c in case.calls} - {None, "None", "ctx", "ctx_entered"}
    if not contexts:
        return False
    changed = False
    for e_s, e_f in zip(stock.events, ferro.events, strict=False):
        if (
            e_s[:1] == e_f[:1] == ["log"]
            and e_s[2] == "AttributeError"
            and e_f[2] == "TypeError"
            and e_s[3] == e_f[3]
        ):
            e_f[2] = "AttributeError"
            changed = True
    return changed


# PyO3's conversion errors: what a native method says when an argument has the wrong type.
_CONVERSION = re.compile(
    r"cannot be interpreted as an integer|must be real number|object cannot be converted to"
    r"|^argument '\w+':|'\w+' object is not an instance of"
)


@matcher("native-argument-conversion")
def _argument_conversion(case, stock, ferro):
    changed = False
    for i, _, s, f in _calls(case, stock, ferro):
        if _is_exc(s, "TypeError") and _is_exc(f, "TypeError", _CONVERSION.pattern) and s != f:
            ferro.calls[i] = s
            changed = True
    return changed


_CREATED_AT = re.compile(r"created at \S+:\d+")


@matcher("debug-source-frame")
def _debug_source_frame(case, stock, ferro):
    """Debug mode's "created at file:line" of a future made by create_future(): the line that
    called it on ferroloop (a native method has no frame), asyncio's own create_future line on
    the stock loop."""
    if not case.debug and not sys.flags.dev_mode:
        return False

    def fn(text):
        return _CREATED_AT.sub("created at <where>", text)

    return _rewrite(stock, fn) | _rewrite(ferro, fn)


@matcher("noncontiguous-write")
def _noncontiguous_write(case, stock, ferro):
    """write()/writelines() of a non-contiguous buffer on a native stream transport: sent in
    order; stock's socket.send() raises BufferError, a fatal error that closes the connection."""
    if not case.target.startswith("tr_") or "mv_strided" not in case.specs():
        return False
    if any(e[:3] == ["log", "ERROR", "BufferError"] for e in stock.events):
        return _become(ferro, stock)
    return False


_EXIT_CALLBACKS = re.compile(
    r"Exception in callback (BaseSubprocessTransport\._process_exited"
    r"|_ChildWatcher\._pidfd_ready|_ChildWatcher\._reap_and_notify)(\(.*\))?"
)


def _kill_log(event):
    # Closing a transport whose child has exited but whose exit the loop has not seen yet: a
    # race between the child and the loop, on both loops.
    return event[:1] == ["log"] and event[3].startswith("Close running child process")


@matcher("child-exit-at-once")
def _child_exit_at_once(case, stock, ferro):
    if not any(c[0].startswith("subprocess_") for c in case.calls):
        return False

    def fn(text):
        return _EXIT_CALLBACKS.sub("Exception in callback <child exit>", text)

    changed = _rewrite(stock, fn) | _rewrite(ferro, fn)
    changed |= _drop_events(stock, _kill_log) | _drop_events(ferro, _kill_log)
    for _, call, s, f in _calls(case, stock, ferro, {"subprocess_exec", "subprocess_shell"}):
        if call[1][:1] not in (["proto"], ["proto_buffered"]) and [["pending"]] in (s[2:], f[2:]):
            # A protocol without connection_made()/process_exited(): asyncio's transport then
            # never wakes its exit waiters. Whether the exit was published before the
            # connection failed (subprocess_exec raises the connection's error) or after (it
            # waits forever) is a race between the child and the loop, on both loops.
            return _become(ferro, stock)
    return changed


_SIZE_LIES = {"LyingBytes(0)", "LyingBytes(99)"}


@matcher("buffer-size-not-len")
def _buffer_size_not_len(case, stock, ferro):
    """Native transports take a buffer's size from the buffer, not from len(): a bytes whose
    __len__ lies is sent whole (stock skips it when len() says 0)."""
    if not _SIZE_LIES & set(case.specs()):
        return False
    changed = False
    s_peer = [e for e in stock.events if e[:1] == ["peer"]]
    f_idx = [i for i, e in enumerate(ferro.events) if e[:1] == ["peer"]]
    if len(s_peer) == len(f_idx):
        for i, e in zip(f_idx, s_peer, strict=True):
            if ferro.events[i] != e:
                ferro.events[i] = e
                changed = True
    return changed


@matcher("call-at-deadline-checked")
def _call_at_deadline_checked(case, stock, ferro):
    """call_at(when) with a `when` that is no plain number: ferroloop raises, from call_at, the
    exception stock raises later (from run_forever, the settle or the teardown); what follows
    depends on a timer stock has and ferroloop has not: the case is stock's."""
    stock_text = json.dumps(stock.raw)
    for _, call, _, f in _calls(case, stock, ferro, {"call_at"}):
        when = call[1][0] if call[1] else None
        if when in _PLAIN_NUMBERS:
            continue
        if isinstance(f, list) and f[:1] == ["setup"]:
            f = f[1]
        if _is_exc(f, "TypeError") or _is_exc(f, "OverflowError"):
            if json.dumps(f[2])[1:-1] in stock_text:
                return _become(ferro, stock)
    return False


@matcher("set-debug-truth-once")
def _set_debug_truth_once(case, stock, ferro):
    """set_debug(obj) whose bool() raises: ferroloop raises it at once, stock stores the object
    (and raises at each later use)."""
    for _, call, s, f in _calls(case, stock, ferro, {"set_debug"}):
        if call[1][:1] and call[1][0] not in ("True", "False", "0", "1") and s != f:
            if isinstance(f, list) and f[:1] == ["exc"]:
                return _become(ferro, stock)
    return False


# -- pending (tests/fuzz/pending.txt): being fixed on branch misuse ---------------------------

FD_METHODS = {"add_reader", "add_writer", "remove_reader", "remove_writer"}


_HUGE = {"2**31", "2**32", "2**63", "2**64", "10**400", "Idx(2**64)", "Fileno(2**31)"}
_ODD_FILENO = {
    "Fileno('3')", "Fileno(-1)", "Fileno(2**31)", "Fileno(3.7)", "Fileno(raise)", "Fileno(raiseV)",
    "Fileno(True)", "Fileno(Idx(sock))", "Fileno(lie)", "True", "False", "-2**63", "-10**400",
}  # fmt: skip


_NUMBER_OBJECTS = {
    "Idx(1)", "Idx(raise)", "Idx(2**64)", "Idx(-1)", "Idx('3')", "IntOnly()", "Flt(raise)",
    "Flt(nan)", "Flt('x')", "Flt(1e-9)", "Decimal(1)", "Decimal('nan')", "Fraction(1,3)", "1j",
    "10**400", "-10**400", "'x'", "''", "'3'", "object()", "None",
}  # fmt: skip


def _become(outcome, other):
    """Make ``outcome`` what ``other`` is; True if that changed it."""
    if outcome.raw == other.raw:
        return False
    outcome.raw.clear()
    outcome.raw.update(copy.deepcopy(other.raw))
    outcome.calls = outcome.raw.get("calls", [])
    outcome.events = outcome.raw.get("events", [])
    return True


_PLAIN_NUMBERS = {
    "0", "1", "-1", "2**31-1", "2**31", "2**32", "2**63", "-2**63", "2**64", "0.0", "-0.0",
    "1e-9", "-1e-9", "1e308", "nan", "inf", "-inf", "True", "False", "now", "now+3600", "3600",
}  # fmt: skip


# -- pending (tests/fuzz/pending.txt): found by the fuzzers, not fixed yet --------------------


# -- sequences: leaks and descriptor mix-ups the sequence fuzzer tolerates while listed --------

SEQUENCE_MATCHERS = {}


def sequence_matcher(key):
    def register(fn):
        SEQUENCE_MATCHERS[key] = fn
        MATCHERS.setdefault(key, lambda case, stock, ferro: False)
        return fn

    return register


def explain_leak(detail):
    """The key of the active sequence matcher that explains one leaked descriptor, or None."""
    listed = set(documented_keys()) | pending_keys()
    for key, fn in SEQUENCE_MATCHERS.items():
        if key in listed and fn(detail):
            return key
    return None
