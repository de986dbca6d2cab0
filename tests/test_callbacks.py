"""call_soon and Handle: ordering, cancellation, repr, argument checks, contexts."""

import contextvars
import functools
import sys

import pytest

pytestmark = pytest.mark.timeout(10)

var = contextvars.ContextVar("var", default="unset")


def run_briefly(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_call_soon_fifo(loop):
    out = []
    for i in range(1000):
        loop.call_soon(out.append, i)
    run_briefly(loop)
    assert out == list(range(1000))


def test_call_soon_passes_args(loop):
    out = []
    loop.call_soon(lambda *a: out.append(a), 1, "two", None)
    run_briefly(loop)
    assert out == [(1, "two", None)]


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_callback_by_name(loop, method):
    # asyncio's signature is (callback, *args, context=None): the callback may be named.
    out = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "ctx")
    getattr(loop, method)(callback=lambda: out.append(var.get()), context=ctx)
    run_briefly(loop)
    assert out == ["ctx"]


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_callback_twice_is_a_type_error(loop, method):
    with pytest.raises(TypeError, match="multiple values for argument 'callback'"):
        getattr(loop, method)(print, callback=print)


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_signature_is_asyncios(loop, method):
    import inspect

    params = list(inspect.signature(getattr(type(loop), method)).parameters)
    assert params == ["self", "callback", "args", "context"]


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
@pytest.mark.parametrize("args", [(), (1,), ((1, 2),), ([],), (None,), (1, 2), ((),)], ids=repr)
def test_handle_args_as_given(loop, method, args):
    """No arguments, one (itself a tuple, a list, None) or several: the callback gets exactly
    them, and _args is the tuple of them, the same object each time (ferroloop keeps a single
    argument without a tuple until _args is asked for)."""
    out = []
    handle = getattr(loop, method)(lambda *a: out.append(a), *args)
    assert handle._args == args
    assert handle._args is handle._args
    # 3.13+ shows a handle's arguments only in debug mode.
    if args and sys.version_info < (3, 13):
        assert repr(args[0] if len(args) == 1 else args[-1]) in repr(handle)
    run_briefly(loop)
    assert out == [args]


def test_timer_handles_with_one_argument_compare_by_it(loop):
    cb = print
    a = loop.call_at(100.0, cb, (1,))
    b = loop.call_at(100.0, cb, (1,))
    c = loop.call_at(100.0, cb, (2,))
    d = loop.call_at(100.0, cb, 1, 2)
    assert a == b
    assert a != c
    assert a != d
    for h in (a, b, c, d):
        h.cancel()


def test_call_soon_returns_handle(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    assert not h.cancelled()
    assert callable(h.cancel)
    run_briefly(loop)
    assert out == [1]


def test_callbacks_scheduled_while_running_wait_for_next_iteration(loop):
    out = []

    def a():
        out.append("a")
        loop.call_soon(out.append, "c")

    loop.call_soon(a)
    loop.call_soon(out.append, "b")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # "c" was scheduled during the iteration that ran stop(), so it waits.
    assert out == ["a", "b"]
    run_briefly(loop)
    assert out == ["a", "b", "c"]


def test_callbacks_scheduled_while_running_run_after_current_batch(loop):
    out = []

    def a():
        out.append("a")
        loop.call_soon(out.append, "c")
        loop.call_soon(loop.stop)

    loop.call_soon(a)
    loop.call_soon(out.append, "b")
    loop.run_forever()
    assert out == ["a", "b", "c"]


def test_self_rescheduling_callback_does_not_starve(loop):
    count = 0

    def again():
        nonlocal count
        count += 1
        loop.call_soon(again)

    loop.call_soon(again)
    loop.call_soon(loop.stop)
    loop.run_forever()
    # One iteration: the rescheduled copy belongs to the next iteration.
    assert count == 1


def test_cancel_handle_before_run(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    loop.call_soon(out.append, 2)
    h.cancel()
    assert h.cancelled()
    run_briefly(loop)
    assert out == [2]


def test_cancel_handle_in_same_iteration(loop):
    out = []
    handles = []

    def first():
        out.append("first")
        handles[0].cancel()

    loop.call_soon(first)
    handles.append(loop.call_soon(out.append, "second"))
    run_briefly(loop)
    assert out == ["first"]
    assert handles[0].cancelled()


def test_cancel_is_idempotent(loop):
    h = loop.call_soon(print)
    h.cancel()
    h.cancel()
    assert h.cancelled()


def test_cancel_after_run_keeps_not_cancelled_before(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    run_briefly(loop)
    assert out == [1]
    assert not h.cancelled()


def cb():
    pass


def cb_args(*args):
    pass


def test_handle_repr(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    code = cb.__code__
    h = loop.call_soon(cb)
    assert repr(h) == f"<Handle cb() at {code.co_filename}:{code.co_firstlineno}>"
    h.cancel()


# Python 3.13 shows a callback's arguments in reprs only in debug mode.
ARGS_IN_REPR = sys.version_info < (3, 13)


def test_handle_repr_with_args(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    code = cb_args.__code__
    h = loop.call_soon(cb_args, 1, "x")
    args = "1, 'x'" if ARGS_IN_REPR else ""
    assert repr(h) == f"<Handle cb_args({args}) at {code.co_filename}:{code.co_firstlineno}>"
    h.cancel()


def test_handle_repr_with_args_in_debug_mode(loop):
    loop.set_debug(True)
    h = loop.call_soon(cb_args, 1, "x")
    assert repr(h).startswith("<Handle cb_args(1, 'x') at ")
    h.cancel()


def test_handle_repr_partial(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    code = cb_args.__code__
    h = loop.call_soon(functools.partial(cb_args, 1))
    args = "1" if ARGS_IN_REPR else ""
    assert repr(h) == f"<Handle cb_args({args})() at {code.co_filename}:{code.co_firstlineno}>"
    h.cancel()


def test_handle_repr_builtin(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    h = loop.call_soon(print)
    assert repr(h) == "<Handle print()>"
    h.cancel()


def test_handle_repr_cancelled(loop):
    h = loop.call_soon(cb)
    h.cancel()
    r = repr(h)
    assert r.startswith("<Handle")
    assert "cancelled" in r
    assert r.endswith(">")


def test_context_argument(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "in-ctx")
    seen = []

    def check():
        seen.append(var.get())
        var.set("changed-by-callback")

    loop.call_soon(check, context=ctx)
    run_briefly(loop)
    assert seen == ["in-ctx"]
    # The callback ran *inside* ctx, so its change is visible there.
    assert ctx[var] == "changed-by-callback"
    assert var.get() == "unset"


def test_default_context_is_copy_at_scheduling_time(loop):
    seen = []

    def check():
        seen.append(var.get())
        var.set("leak?")

    token = var.set("first")
    try:
        loop.call_soon(check)
        var.set("second")
        loop.call_soon(check)
    finally:
        var.reset(token)
    run_briefly(loop)
    assert seen == ["first", "second"]
    assert var.get() == "unset"  # the callback's change did not leak


def test_callbacks_do_not_share_context(loop):
    seen = []

    def setter():
        var.set("set-by-first")

    loop.call_soon(setter)
    loop.call_soon(lambda: seen.append(var.get()))
    run_briefly(loop)
    assert seen == ["unset"]


async def coro_func():
    pass


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_non_callable_rejected_in_debug(loop, method):
    # The stock loop only validates callbacks in debug mode.
    loop.set_debug(True)
    with pytest.raises(TypeError, match=rf"a callable object was expected by {method}\(\)"):
        getattr(loop, method)(1)


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_coroutine_function_rejected_in_debug(loop, method):
    loop.set_debug(True)
    with pytest.raises(TypeError, match=rf"coroutines cannot be used with {method}\(\)"):
        getattr(loop, method)(coro_func)


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_coroutine_object_rejected_in_debug(loop, method):
    loop.set_debug(True)
    coro = coro_func()
    try:
        with pytest.raises(TypeError, match=rf"coroutines cannot be used with {method}\(\)"):
            getattr(loop, method)(coro)
    finally:
        coro.close()


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_ferroloop_unbound_method_on_a_foreign_object_is_a_type_error(ferro, method):
    """ferroloop's native entry point relies on its method descriptor's type check: the class
    attribute called with something that is not a loop raises TypeError instead of reading a
    random object as a loop (the stock loop's Python method fails with AttributeError)."""
    func = getattr(type(ferro), method)
    with pytest.raises(TypeError):
        func(object(), print)
    with pytest.raises(TypeError):
        func.__get__(object())(print)
