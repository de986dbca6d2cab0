"""Debug mode: get/set_debug, environment switches, slow-callback warnings, thread checks."""

import asyncio
import logging
import re
import socket
import sys
import threading
import time
from fractions import Fraction

import pytest

pytestmark = pytest.mark.timeout(30)


def test_debug_off_by_default(loop):
    # Off unless the interpreter asks for asyncio's debug mode (-X dev, PYTHONASYNCIODEBUG), as
    # asyncio decides it.
    assert loop.get_debug() is asyncio.coroutines._is_debug_mode()


def test_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


@pytest.mark.parametrize(("on", "off"), [(1, 0), ("yes", ""), ([0], [])])
def test_set_debug_takes_any_truth_value(loop, caplog, on, off):
    """aiohttp's tests call set_debug(1) / set_debug(0); debug mode really follows the value."""

    def slow_callbacks_logged():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.call_soon(slow_callback)
            loop.call_soon(loop.stop)
            loop.run_forever()
        return [r for r in caplog.records if r.getMessage().startswith("Executing <Handle")]

    loop.slow_callback_duration = 0.02
    loop.set_debug(on)
    assert loop.get_debug()
    assert len(slow_callbacks_logged()) == 1
    loop.set_debug(off)
    assert not loop.get_debug()
    assert slow_callbacks_logged() == []


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.5
    assert loop.slow_callback_duration == 0.5


def slow_callback():
    time.sleep(0.06)


def test_slow_callback_warning_in_debug(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_callback)
        loop.call_soon(loop.stop)
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    slow = [m for m in msgs if m.startswith("Executing <Handle slow_callback()")]
    assert len(slow) == 1, msgs
    assert slow[0].endswith(" seconds")
    took = float(slow[0].rsplit(" took ", 1)[1].split()[0])
    assert 0.05 <= took < 5


def test_slow_timer_warning_in_debug(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_later(0, slow_callback)
        loop.call_later(0.01, loop.stop)
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any(m.startswith("Executing <TimerHandle when=") and " took " in m for m in msgs), msgs


class _Flt:
    """An object with only __float__: a float cannot be compared with it."""

    def __float__(self):
        return float("nan")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (_Flt(), "'>=' not supported between instances of 'float' and '_Flt'"),
        (len, "'>=' not supported between instances of 'float' and 'builtin_function_or_method'"),
        ("0.1", "'>=' not supported between instances of 'float' and 'str'"),
    ],
    ids=["float-method", "function", "str"],
)
def test_slow_callback_duration_is_compared_as_it_is(loop, value, error):
    """asyncio compares the callback's duration with the attribute at each callback in debug
    mode: what a float cannot be compared with is a TypeError out of run_forever(), after the
    callback ran; nothing is checked when it is set, or outside debug mode."""
    ran = []
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    loop.slow_callback_duration = value
    loop.call_soon(ran.append, 1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == [1]
    loop.set_debug(True)
    loop.call_soon(ran.append, 2)
    with pytest.raises(TypeError, match=re.escape(error)):
        loop.run_forever()
    assert ran == [1, 2]
    loop.slow_callback_duration = 0.1
    loop.call_soon(loop.stop)
    loop.run_forever()


@pytest.mark.parametrize(
    ("value", "logged"),
    [(float("nan"), False), (10**400, False), (Fraction(1, 100), True), (0, True)],
    ids=["nan", "huge-int", "fraction", "zero"],
)
def test_slow_callback_duration_numbers(loop, caplog, value, logged):
    loop.set_debug(True)
    loop.slow_callback_duration = value
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_callback)
        loop.call_soon(loop.stop)
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any(m.startswith("Executing <Handle slow_callback()") for m in msgs) == logged


def test_cancelled_handle_is_not_timed(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(lambda: None).cancel()
        loop.run_until_complete(asyncio.sleep(0))
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not [m for m in msgs if "cancelled" in m], msgs


@pytest.mark.parametrize("buffered", [False, True], ids=["protocol", "buffered"])
def test_slow_transport_callbacks_are_logged_in_debug(loop, caplog, buffered):
    """A slow data_received()/buffer_updated() and eof_received(): logged as the transport's
    reader handle, the last one cancelled (the transport stopped reading)."""
    a, b = socket.socketpair()

    class Slow(asyncio.BufferedProtocol if buffered else asyncio.Protocol):
        buf = bytearray(64)

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            time.sleep(0.06)

        def data_received(self, data):
            time.sleep(0.06)

        def eof_received(self):
            time.sleep(0.06)

    async def main():
        tr, _ = await loop.connect_accepted_socket(Slow, a)
        b.send(b"x")
        await asyncio.sleep(0.1)
        b.shutdown(socket.SHUT_WR)
        await asyncio.sleep(0.1)
        tr.close()
        await asyncio.sleep(0)

    loop.set_debug(True)
    loop.slow_callback_duration = 0.04
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.run_until_complete(main())
    finally:
        b.close()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    slow = [m for m in msgs if m.startswith("Executing ")]
    pattern = r"Executing <Handle {}\w*\._read_ready\(\)[^>]*> took \d+\.\d{{3}} seconds"
    assert len(slow) == 2, msgs
    assert re.fullmatch(pattern.format(""), slow[0]), slow
    assert re.fullmatch(pattern.format("cancelled "), slow[1]), slow


def test_fast_transport_callbacks_are_not_logged(loop, caplog):
    a, b = socket.socketpair()

    async def main():
        tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        b.send(b"x")
        await asyncio.sleep(0.05)
        tr.close()
        await asyncio.sleep(0)

    loop.set_debug(True)
    loop.slow_callback_duration = 10
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.run_until_complete(main())
    finally:
        b.close()
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


def test_no_slow_warning_without_debug(loop, caplog):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    loop.slow_callback_duration = 0.02
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_soon(slow_callback)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


def test_no_slow_warning_for_fast_callback(loop, caplog):
    loop.set_debug(True)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(lambda: None)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


def test_debug_detects_call_soon_from_other_thread(loop):
    loop.set_debug(True)
    errors = []

    def other_thread():
        try:
            loop.call_soon(print)
        except RuntimeError as exc:
            errors.append(str(exc))

    def in_loop():
        th = threading.Thread(target=other_thread)
        th.start()
        th.join()
        loop.stop()

    loop.call_soon(in_loop)
    loop.run_forever()
    assert errors == [
        "Non-thread-safe operation invoked on an event loop other than the current one"
    ]


def test_no_thread_check_without_debug(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    results = []

    def other_thread():
        h = loop.call_soon(results.append, "from thread")
        results.append(h is not None)

    def in_loop():
        th = threading.Thread(target=other_thread)
        th.start()
        th.join()
        loop.call_soon(loop.stop)

    loop.call_soon(in_loop)
    loop.run_forever()
    assert results == [True, "from thread"]


def test_coroutine_origin_tracking_in_debug(loop):
    depth_before = sys.get_coroutine_origin_tracking_depth()
    loop.set_debug(True)
    seen = []

    async def main():
        seen.append(sys.get_coroutine_origin_tracking_depth())

    loop.run_until_complete(main())
    assert seen[0] > 0
    assert sys.get_coroutine_origin_tracking_depth() == depth_before


def test_no_coroutine_origin_tracking_without_debug(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    seen = []

    async def main():
        seen.append(sys.get_coroutine_origin_tracking_depth())

    loop.run_until_complete(main())
    assert seen == [0]


def test_debug_run_argument(flavor):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert flavor.run(main(), debug=True) is True
    assert flavor.run(main(), debug=False) is False


# --- environment switches, checked in child interpreters -------------------

PRINT_DEBUG = "lp = {loop}\nprint(lp.get_debug())\nlp.close()\n"


def child_debug(flavor, run_python, args=(), env=None):
    code = flavor.python_code(PRINT_DEBUG.format(loop=flavor.loop_expr))
    proc = run_python([sys.executable, *args, "-c", code], env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_env_default_not_debug(flavor, run_python):
    assert child_debug(flavor, run_python) == "False"


def test_env_debug_variable(flavor, run_python):
    assert child_debug(flavor, run_python, env={"PYTHONASYNCIODEBUG": "1"}) == "True"


def test_env_dev_mode(flavor, run_python):
    assert child_debug(flavor, run_python, args=("-X", "dev")) == "True"


def test_env_ignored_with_dash_e(flavor, run_python):
    assert child_debug(flavor, run_python, args=("-E",), env={"PYTHONASYNCIODEBUG": "1"}) == "False"


def test_env_debug_under_run(flavor, run_python):
    code = flavor.python_code(
        "async def main():\n"
        "    print(asyncio.get_running_loop().get_debug())\n"
        f"{flavor.run_expr}(main())\n"
    )
    proc = run_python([sys.executable, "-c", code], env={"PYTHONASYNCIODEBUG": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def debug_cb():
    pass


def test_handle_repr_in_debug_shows_creation_site(loop):
    loop.set_debug(True)
    code = debug_cb.__code__
    line = sys._getframe().f_lineno + 1
    h = loop.call_soon(debug_cb)
    expected = (
        f"<Handle debug_cb() at {code.co_filename}:{code.co_firstlineno} "
        f"created at {__file__}:{line}>"
    )
    assert repr(h) == expected
    h.cancel()
    # In debug mode a cancelled handle keeps describing its callback.
    assert repr(h) == expected.replace("<Handle ", "<Handle cancelled ")


def test_timer_handle_repr_in_debug_shows_creation_site(loop):
    loop.set_debug(True)
    line = sys._getframe().f_lineno + 1
    h = loop.call_at(1234.5, debug_cb)
    assert repr(h).startswith("<TimerHandle when=1234.5 debug_cb() at ")
    assert repr(h).endswith(f" created at {__file__}:{line}>")
    h.cancel()
    assert repr(h).startswith("<TimerHandle cancelled when=1234.5 debug_cb() at ")


def test_source_traceback_in_exception_context(loop):
    loop.set_debug(True)
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def boom():
        raise ValueError

    line = sys._getframe().f_lineno + 1
    loop.call_soon(boom)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    tb = contexts[0]["source_traceback"]
    assert (tb[-1][0], tb[-1][1]) == (__file__, line)


def test_no_source_traceback_without_debug(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def boom():
        raise ValueError

    loop.call_soon(boom)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert "source_traceback" not in contexts[0]


def test_default_handler_in_debug_logs_creation_site(loop, caplog):
    loop.set_debug(True)

    def boom():
        raise ValueError("debug boom")

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(boom)
        loop.call_soon(loop.stop)
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(msgs) == 1
    assert "Object created at (most recent call last):" in msgs[0]
    assert __file__ in msgs[0]


def test_slow_task_step_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02

    async def slow_coro():
        time.sleep(0.06)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(loop.create_task(slow_coro(), name="slowpoke"))
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    slow = [m for m in msgs if m.startswith("Executing <Task ")]
    assert len(slow) == 1, msgs
    assert "name='slowpoke'" in slow[0]
    assert "slow_coro()" in slow[0]


def test_set_debug_while_running_enables_origin_tracking(loop):
    loop.set_debug(False)  # under -X dev loops start in debug mode, as asyncio's do
    seen = []

    async def main():
        seen.append(sys.get_coroutine_origin_tracking_depth())
        loop.set_debug(True)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(sys.get_coroutine_origin_tracking_depth())

    loop.run_until_complete(main())
    assert seen[0] == 0
    assert seen[1] > 0
    assert sys.get_coroutine_origin_tracking_depth() == 0


def test_run_in_executor_rejects_coroutine_function_in_debug(loop):
    loop.set_debug(True)

    async def coro_func():
        pass

    with pytest.raises(TypeError, match=r"coroutines cannot be used with run_in_executor\(\)"):
        loop.run_in_executor(None, coro_func)


def test_debug_detects_call_later_from_other_thread(loop):
    loop.set_debug(True)
    errors = []

    def other_thread():
        for call in (lambda: loop.call_later(1, print), lambda: loop.call_at(1, print)):
            try:
                call()
            except RuntimeError as exc:
                errors.append(str(exc))

    def in_loop():
        th = threading.Thread(target=other_thread)
        th.start()
        th.join()
        loop.stop()

    loop.call_soon(in_loop)
    loop.run_forever()
    assert len(errors) == 2
    assert all("Non-thread-safe operation" in e for e in errors)


def test_call_soon_threadsafe_allowed_from_other_thread_in_debug(loop):
    loop.set_debug(True)
    out = []

    def other_thread():
        loop.call_soon_threadsafe(out.append, "ok")
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=other_thread).start())
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert out == ["ok"]
