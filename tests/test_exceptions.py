"""Exception handling: handlers, default handler logging, KeyboardInterrupt/SystemExit."""

import asyncio
import contextvars
import gc
import logging
import sys

import pytest

pytestmark = pytest.mark.timeout(10)


def run_briefly(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def failing():
    raise ValueError("callback failed")


def test_callback_exception_goes_to_handler(loop):
    contexts = []
    out = []

    def handler(lp, ctx):
        contexts.append((lp, ctx))

    loop.set_exception_handler(handler)
    h = loop.call_soon(failing)
    loop.call_soon(out.append, "still running")
    run_briefly(loop)
    assert out == ["still running"]
    assert len(contexts) == 1
    lp, ctx = contexts[0]
    assert lp is loop
    assert {"message", "exception", "handle"} <= set(ctx)
    assert isinstance(ctx["exception"], ValueError)
    assert str(ctx["exception"]) == "callback failed"
    assert ctx["handle"] is h
    assert ctx["message"].startswith("Exception in callback failing()")


def test_timer_exception_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    h = loop.call_later(0, failing)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert contexts[0]["handle"] is h
    assert isinstance(contexts[0]["exception"], ValueError)
    assert contexts[0]["message"].startswith("Exception in callback failing()")


def test_base_exception_subclass_goes_to_handler(loop):
    class Custom(BaseException):
        pass

    def raise_custom():
        raise Custom()

    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    loop.call_soon(raise_custom)
    run_briefly(loop)
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], Custom)


def test_get_set_exception_handler(loop):
    assert loop.get_exception_handler() is None

    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


@pytest.mark.parametrize("bad", [1, "handler", object()])
def test_set_exception_handler_not_callable(loop, bad):
    with pytest.raises(TypeError, match="A callable object or None is expected"):
        loop.set_exception_handler(bad)


def test_call_exception_handler_custom(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    ctx = {"message": "custom message", "extra": 1}
    loop.call_exception_handler(ctx)
    assert contexts == [ctx]


def test_call_exception_handler_default_logs(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "something happened", "foo": 42})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    msg = records[0].getMessage()
    assert msg.startswith("something happened")
    assert "foo: 42" in msg


def test_default_exception_handler_direct(loop, caplog):
    err = RuntimeError("xyz")
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "direct call", "exception": err})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage().startswith("direct call")
    assert records[0].exc_info is not None
    assert records[0].exc_info[1] is err


def test_default_exception_handler_without_message(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert "Unhandled exception in event loop" in records[0].getMessage()


def test_callback_exception_logged_without_handler(loop, caplog):
    out = []
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(failing)
        loop.call_soon(out.append, "after")
        run_briefly(loop)
    assert out == ["after"]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage().startswith("Exception in callback failing()")
    assert isinstance(records[0].exc_info[1], ValueError)


def test_handler_that_raises_is_logged_not_propagated(loop, caplog):
    def bad_handler(lp, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(bad_handler)
    out = []
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(failing)
        loop.call_soon(out.append, "survived")
        run_briefly(loop)
    assert out == ["survived"]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert "Unhandled error in exception handler" in records[0].getMessage()
    assert isinstance(records[0].exc_info[1], RuntimeError)


def test_direct_call_exception_handler_with_raising_handler(loop, caplog):
    def bad_handler(lp, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(bad_handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "m"})  # must not raise
    assert any(
        "Unhandled error in exception handler" in r.getMessage()
        for r in caplog.records
        if r.name == "asyncio"
    )


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_handler_propagates(loop, exc_type):
    def handler(lp, ctx):
        raise exc_type()

    loop.set_exception_handler(handler)
    with pytest.raises(exc_type):
        loop.call_exception_handler({"message": "m"})


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_callback_propagates_out_of_run_forever(loop, exc_type):
    out = []

    def interrupt():
        raise exc_type()

    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    loop.call_soon(out.append, "before")
    loop.call_soon(interrupt)
    loop.call_soon(out.append, "after")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert out == ["before"]
    assert not loop.is_running()
    assert contexts == []  # not routed to the exception handler
    # The remaining callbacks run on the next run.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["before", "after"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_timer_propagates(loop, exc_type):
    def interrupt():
        raise exc_type()

    loop.call_later(0, interrupt)
    loop.call_later(5, loop.stop)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_coroutine_propagates_out_of_run_until_complete(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert not loop.is_running()
    # The loop is reusable.
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_base_exception_from_callback_during_run_until_complete(loop):
    fut = loop.create_future()
    loop.call_soon(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    loop.call_soon(fut.set_result, "done")
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(fut)
    assert not fut.done()
    assert loop.run_until_complete(fut) == "done"


def test_task_exception_never_retrieved(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def fail():
        raise ValueError("lost")

    async def main():
        loop.create_task(fail())
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    gc.collect()
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Task exception was never retrieved"
    assert isinstance(contexts[0]["exception"], ValueError)
    assert isinstance(contexts[0]["future"], asyncio.Task)


def test_future_exception_never_retrieved(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    fut = loop.create_future()
    fut.set_exception(ValueError("unretrieved"))
    del fut
    gc.collect()
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Future exception was never retrieved"


def test_exception_handler_context_follows_the_python_version(loop):
    # Python 3.11: the handler is called directly by the loop, in the context that is running
    # the loop; from 3.12 it runs inside the failing handle's context.

    var = contextvars.ContextVar("exc_ctx_var", default="loop-context")
    ctx = contextvars.Context()
    ctx.run(var.set, "callback-context")
    seen = []
    loop.set_exception_handler(lambda lp, c: seen.append(var.get()))
    loop.call_soon(failing, context=ctx)
    run_briefly(loop)
    expected = "callback-context" if sys.version_info >= (3, 12) else "loop-context"
    assert seen == [expected]


def test_base_exception_in_run_until_complete_not_logged_later(loop, caplog):
    async def main():
        raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(main())
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_exception_handler_gets_task_context_key(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def fail():
        raise ValueError("task failure")

    async def main():
        task = loop.create_task(fail())
        await asyncio.sleep(0)
        return task

    task = loop.run_until_complete(main())
    del task
    gc.collect()
    assert len(contexts) == 1
    assert contexts[0]["future"] is not None
    assert "exception" in contexts[0]
