"""Misuse answered as asyncio answers it (issue 13, section 2).

Odd file descriptors and file objects, odd deadlines, odd arguments: each test asserts what the
stock selector loop of the running Python does (exception type and message, return value, what
runs), on both loops. Where ferroloop answers differently by design, the test says so and asserts
ferroloop's answer on ferroloop only.
"""

from __future__ import annotations

import asyncio
import decimal
import errno
import fractions
import re
import socket
import sys

import pytest

pytestmark = pytest.mark.timeout(30)

ADD = ["add_reader", "add_writer"]
REMOVE = ["remove_reader", "remove_writer"]
# Past a C int: no fd has such a number.
HUGE = [2**31, 2**32, 2**63, 2**64]


def _noop(*args):
    pass


class FilenoReturns:
    """A file object whose fileno() returns whatever it is given."""

    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value

    def __repr__(self):
        return f"FilenoReturns({self.value!r})"


class FilenoRaises:
    def __init__(self, exc):
        self.exc = exc

    def fileno(self):
        raise self.exc

    def __repr__(self):
        return f"FilenoRaises({type(self.exc).__name__})"


class Index:
    """An int-like object through __index__ only."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value

    def __repr__(self):
        return f"Index({self.value})"


class IntOnly:
    """An int-like object through __int__ only."""

    def __init__(self, value):
        self.value = value

    def __int__(self):
        return self.value

    def __repr__(self):
        return f"IntOnly({self.value})"


class IntRaises:
    def __int__(self):
        raise ZeroDivisionError("no int")


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


# -- file descriptors that no fd can have ------------------------------------------------------


@pytest.mark.parametrize("method", REMOVE)
@pytest.mark.parametrize("fd", HUGE)
def test_remove_of_a_number_past_any_fd_is_false(loop, method, fd):
    # asyncio's selector looks the number up, finds no key, and says so.
    assert getattr(loop, method)(fd) is False
    assert getattr(loop, method)(FilenoReturns(fd)) is False


@pytest.mark.parametrize("method", ADD)
@pytest.mark.parametrize("fd", HUGE)
def test_add_of_a_number_past_a_c_int_is_an_overflow_error(loop, method, fd):
    # What epoll.register() raises for it.
    message = r"^Python int too large to convert to C int$"
    with pytest.raises(OverflowError, match=message):
        getattr(loop, method)(fd, _noop)
    with pytest.raises(OverflowError, match=message):
        getattr(loop, method)(FilenoReturns(fd), _noop)


@pytest.mark.parametrize("method", ADD)
def test_add_of_the_largest_c_int_is_a_bad_fd(loop, method):
    with pytest.raises(OSError) as info:
        getattr(loop, method)(2**31 - 1, _noop)
    assert info.value.errno == errno.EBADF
    assert getattr(loop, "remove" + method[3:])(2**31 - 1) is False


@pytest.mark.parametrize("method", ADD + REMOVE)
@pytest.mark.parametrize("fd", [-1, -(2**31), -(2**64)])
def test_negative_numbers_are_invalid_descriptors(loop, method, fd):
    args = (_noop,) if method in ADD else ()
    message = rf"^Invalid file descriptor: {fd}$"
    with pytest.raises(ValueError, match=message):
        getattr(loop, method)(fd, *args)
    with pytest.raises(ValueError, match=message):
        getattr(loop, method)(FilenoReturns(fd), *args)


@pytest.mark.parametrize("method", ADD + REMOVE)
@pytest.mark.parametrize("fd", [3.0, "3", b"3", None, Index(3), IntOnly(3), object()])
def test_a_non_int_without_fileno_is_an_invalid_file_object(loop, method, fd):
    # Only an int is taken as a number; anything else needs fileno().
    args = (_noop,) if method in ADD else ()
    with pytest.raises(ValueError, match=rf"^Invalid file object: {re.escape(repr(fd))}$"):
        getattr(loop, method)(fd, *args)


# -- what fileno() returns: int() of it, as selectors._fileobj_to_fd ----------------------------


def _int_likes(fd):
    """fileno() results that int() turns into `fd`."""
    return [str(fd), f" {fd}\n", str(fd).encode(), float(fd), fd + 0.7, Index(fd), IntOnly(fd)]


@pytest.mark.parametrize("kind", range(7))
def test_fileno_result_is_taken_through_int(loop, sockpair, kind):
    a, b = sockpair
    obj = FilenoReturns(_int_likes(a.fileno())[kind])
    got = []
    assert loop.add_reader(obj, lambda: got.append(a.recv(10))) is None
    b.send(b"ping")
    loop.run_until_complete(asyncio.sleep(0.05))
    assert got == [b"ping"]
    # The same fd, whichever object names it.
    assert loop.remove_reader(a.fileno()) is True
    assert loop.add_writer(obj, _noop) is None
    assert loop.remove_writer(FilenoReturns(_int_likes(a.fileno())[kind])) is True
    assert loop.remove_writer(a.fileno()) is False


def test_fileno_returning_the_str_of_a_regular_files_fd_is_that_fd(loop, tmp_path):
    # The "PermissionError": fd 3 was a regular file, which epoll refuses.
    with open(tmp_path / "regular", "w") as f:
        for method in ADD:
            with pytest.raises(PermissionError) as info:
                getattr(loop, method)(FilenoReturns(str(f.fileno())), _noop)
            assert info.value.errno == errno.EPERM


@pytest.mark.parametrize("method", ADD + REMOVE)
@pytest.mark.parametrize("value", [None, "x", "", [], 1j, object()])
def test_fileno_result_int_refuses_is_an_invalid_file_object(loop, method, value):
    args = (_noop,) if method in ADD else ()
    obj = FilenoReturns(value)
    with pytest.raises(ValueError, match=rf"^Invalid file object: {re.escape(repr(obj))}$"):
        getattr(loop, method)(obj, *args)


@pytest.mark.parametrize("method", ADD + REMOVE)
@pytest.mark.parametrize("exc", [AttributeError("a"), TypeError("t"), ValueError("v")])
def test_fileno_raising_attribute_type_or_value_error_is_an_invalid_file_object(loop, method, exc):
    args = (_noop,) if method in ADD else ()
    obj = FilenoRaises(exc)
    with pytest.raises(ValueError, match=rf"^Invalid file object: {re.escape(repr(obj))}$"):
        getattr(loop, method)(obj, *args)


@pytest.mark.parametrize("method", ADD + REMOVE)
@pytest.mark.parametrize(
    "exc", [OSError(errno.EBADF, "closed"), ZeroDivisionError("z"), KeyError(3)]
)
def test_fileno_raising_anything_else_propagates(loop, method, exc):
    args = (_noop,) if method in ADD else ()
    with pytest.raises(type(exc)) as info:
        getattr(loop, method)(FilenoRaises(exc), *args)
    assert info.value is exc
    with pytest.raises(ZeroDivisionError, match="^no int$"):
        getattr(loop, method)(FilenoReturns(IntRaises()), *args)


def test_bools_are_fds_0_and_1(flavor, run_python):
    """True is fd 1 and False fd 0, as for any int; 3.13 made epoll.register() warn about it."""
    body = """
import os, socket, warnings
loop = LOOP
a, b = socket.socketpair()
os.dup2(a.fileno(), 1)
got = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loop.add_reader(True, lambda: got.append(os.read(1, 10)))
b.send(b"x")
loop.run_until_complete(asyncio.sleep(0.05))
removed = loop.remove_reader(1)
print(got, removed, [(w.category.__name__, str(w.message)) for w in caught],
      loop.remove_reader(True), loop.remove_writer(False), file=__import__("sys").stderr)
loop.close()
a.close()
b.close()
"""
    code = flavor.python_code(body.replace("LOOP", flavor.loop_expr))
    proc = run_python([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    warned = [("RuntimeWarning", "bool is used as a file descriptor")]
    expected = f"[b'x'] True {warned if sys.version_info >= (3, 13) else []} False False"
    assert proc.stderr.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("method", ADD)
def test_add_reader_and_add_writer_return_none(loop, sockpair, method):
    assert getattr(loop, method)(sockpair[0].fileno(), _noop) is None
    assert getattr(loop, method)(sockpair[0], _noop) is None  # replacing the first
    assert getattr(loop, "remove" + method[3:])(sockpair[0]) is True


# -- deadlines: call_later adds with Python's +, call_at compares with floats -------------------


class FloatOnly:
    def __float__(self):
        return 0.0


class FloatRaises:
    def __float__(self):
        raise ZeroDivisionError("no float")


def _type_name(obj):
    cls = type(obj)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


NOT_ADDABLE = [object(), Index(1), IntOnly(1), FloatOnly(), FloatRaises(), "1", b"1", [1]]


@pytest.mark.parametrize("delay", NOT_ADDABLE + [decimal.Decimal(1)], ids=_type_name)
def test_call_later_adds_the_delay_to_the_time_with_python_plus(loop, delay):
    # asyncio's call_later is call_at(self.time() + delay): what float + delay refuses is a
    # TypeError there, at once, __index__ and __float__ notwithstanding.
    name = "decimal.Decimal" if isinstance(delay, decimal.Decimal) else type(delay).__name__
    message = rf"^unsupported operand type\(s\) for \+: 'float' and '{re.escape(name)}'$"
    with pytest.raises(TypeError, match=message):
        loop.call_later(delay, _noop)
    loop.close()
    with pytest.raises(TypeError, match=message):  # before the closed check, as there
        loop.call_later(delay, _noop)


@pytest.mark.parametrize("delay", [2**1024, -(2**1100)])
def test_call_later_of_an_int_past_a_double_is_an_overflow_error(loop, delay):
    with pytest.raises(OverflowError, match=r"^int too large to convert to float$"):
        loop.call_later(delay, _noop)


@pytest.mark.parametrize(
    "delay", [fractions.Fraction(1, 100), False, 0, 2**53, -5], ids=lambda d: repr(d)
)
def test_call_later_of_numbers_float_plus_accepts(loop, delay):
    ran = []
    timer = loop.call_later(delay, ran.append, delay)
    assert isinstance(timer.when(), float)
    loop.run_until_complete(asyncio.sleep(0.05))
    assert ran == ([] if delay == 2**53 else [delay])
    timer.cancel()


@pytest.mark.parametrize("delay", [float("nan"), float("-inf")])
def test_call_later_of_a_degenerate_delay_runs_at_once(loop, delay):
    ran = []
    loop.call_later(3600, ran.append, "never")
    loop.call_later(delay, ran.append, "now")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ran == ["now"]


@pytest.mark.parametrize("when", NOT_ADDABLE, ids=_type_name)
def test_call_at_with_a_timer_pending_compares_the_deadline_with_a_float(loop, when):
    # asyncio's heap push compares the new deadline with the pending one's.
    loop.call_later(3600, _noop)
    name = re.escape(type(when).__name__)
    with pytest.raises(TypeError, match=rf"^'<' not supported between instances of '{name}' and"):
        loop.call_at(when, _noop)
    loop.run_until_complete(asyncio.sleep(0))  # and the loop is fine


@pytest.mark.parametrize("when", NOT_ADDABLE, ids=_type_name)
def test_call_at_with_no_timer_pending_fails_on_the_first_comparison(loop, flavor, when):
    """Documented difference: asyncio takes the deadline and its next iteration fails, out of
    run_forever (and every later one, until the timer is gone); ferroloop raises that TypeError
    from call_at."""
    name = re.escape(type(when).__name__)
    message = rf"^'>=' not supported between instances of '{name}' and 'float'$"
    if flavor.name == "asyncio":
        loop.call_at(when, _noop)
        loop.call_soon(loop.stop)
        with pytest.raises(TypeError, match=message):
            loop.run_forever()
    else:
        with pytest.raises(TypeError, match=message):
            loop.call_at(when, _noop)
        assert loop._queue_sizes() == (0, 0)
        loop.run_until_complete(asyncio.sleep(0))


def test_call_at_checks_the_closed_loop_before_the_deadline(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.call_at(object(), _noop)


def test_call_at_of_a_deadline_a_float_cannot_be_subtracted_from(loop, flavor):
    """Documented difference: asyncio takes a Decimal deadline (it compares with floats) and
    fails out of run_forever once it computes the poll's timeout from it; ferroloop raises that
    TypeError from call_at."""
    loop.call_later(3600, _noop)
    when = decimal.Decimal(loop.time()) + decimal.Decimal("0.01")
    message = r"^unsupported operand type\(s\) for -: 'decimal.Decimal' and 'float'$"
    if flavor.name == "asyncio":
        loop.call_at(when, _noop)
        loop.call_later(0.1, loop.stop)
        with pytest.raises(TypeError, match=message):
            loop.run_forever()
    else:
        with pytest.raises(TypeError, match=message):
            loop.call_at(when, _noop)


def test_call_at_of_a_fraction_runs_it(loop):
    ran = []
    loop.call_later(3600, _noop)
    loop.call_at(fractions.Fraction(loop.time()) + fractions.Fraction(1, 100), ran.append, "ran")
    loop.run_until_complete(asyncio.sleep(0.1))
    assert ran == ["ran"]


# -- set_debug -----------------------------------------------------------------------------------


class BoolRaises:
    def __bool__(self):
        raise ZeroDivisionError("no bool")


@pytest.mark.parametrize("value", [1, "0", "", [], None, 0.0, (1,)], ids=repr)
def test_get_debug_returns_what_set_debug_was_given(loop, value):
    loop.set_debug(value)
    assert loop.get_debug() is value
    handle = loop.call_soon(_noop)
    # Debug mode records where a handle was made; its truth value decides.
    assert bool(handle._source_traceback) is bool(value)
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_set_debug_with_an_object_whose_bool_raises(loop, flavor):
    """Documented difference: asyncio stores the object and every later use of the flag raises
    what bool() raises (call_soon, call_later, close...); ferroloop raises it from set_debug and
    keeps its flag."""
    loop.set_debug(True)
    if flavor.name == "asyncio":
        loop.set_debug(BoolRaises())
        with pytest.raises(ZeroDivisionError, match="^no bool$"):
            loop.call_soon(_noop)
        loop.set_debug(False)
    else:
        with pytest.raises(ZeroDivisionError, match="^no bool$"):
            loop.set_debug(BoolRaises())
        assert loop.get_debug() is True
    loop.call_soon(_noop)


# -- context= that is no contextvars.Context ----------------------------------------------------


class RunsCallbacks:
    """Not a Context, but it has what asyncio's Handle._run calls: run(callback, *args)."""

    def __init__(self):
        self.calls = []

    def run(self, callback, *args):
        self.calls.append(args)
        return callback(*args)


SCHEDULERS = {
    "call_soon": lambda loop, *a, **kw: loop.call_soon(*a, **kw),
    "call_later": lambda loop, *a, **kw: loop.call_later(0, *a, **kw),
    "call_at": lambda loop, *a, **kw: loop.call_at(loop.time(), *a, **kw),
    "call_soon_threadsafe": lambda loop, *a, **kw: loop.call_soon_threadsafe(*a, **kw),
}


@pytest.mark.parametrize("schedule", SCHEDULERS.values(), ids=SCHEDULERS.keys())
@pytest.mark.parametrize("context", [object(), 1, "ctx"], ids=repr)
def test_context_without_run_fails_when_the_callback_runs(loop, schedule, context):
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
    ran = []
    handle = schedule(loop, ran.append, "x", context=context)
    assert handle._context is context
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ran == []
    [report] = reports
    assert report["handle"] is handle
    assert report["message"].startswith("Exception in callback ")
    exc = report["exception"]
    assert type(exc) is AttributeError
    assert str(exc) == f"'{type(context).__name__}' object has no attribute 'run'"


@pytest.mark.parametrize("schedule", SCHEDULERS.values(), ids=SCHEDULERS.keys())
def test_context_with_a_run_method_is_used_as_one(loop, schedule):
    context = RunsCallbacks()
    ran = []
    schedule(loop, ran.append, "x", context=context)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ran == ["x"]
    assert context.calls == [("x",)]
