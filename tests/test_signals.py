"""add_signal_handler / remove_signal_handler, and Ctrl-C behaviour in child processes."""

import asyncio
import contextvars
import os
import signal
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(20)


def test_handler_runs_on_signal(loop):
    got = []

    def handler(*args):
        got.append(args)
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler, "a", 2)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [("a", 2)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_wakes_blocked_loop(loop):
    got = []

    def handler():
        got.append(time.monotonic())
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler)
    safety = loop.call_later(30, loop.stop)
    timer = threading.Timer(0.2, os.kill, args=(os.getpid(), signal.SIGUSR1))
    t0 = time.monotonic()
    timer.start()
    loop.run_forever()
    timer.join()
    safety.cancel()
    assert len(got) == 1
    assert got[0] - t0 < 5


def test_handler_runs_as_callback_not_in_signal_context(loop):
    # The handler is dispatched by the loop: it may use loop APIs freely.
    got = []

    def handler():
        got.append(loop.is_running())
        loop.call_soon(loop.stop)

    loop.add_signal_handler(signal.SIGUSR1, handler)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [True]


def test_multiple_signals(loop):
    got = []

    def handler(name):
        got.append(name)
        if len(got) == 2:
            loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, handler, "usr2")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(0.05, os.kill, os.getpid(), signal.SIGUSR2)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == ["usr1", "usr2"]


def test_replace_handler(loop):
    got = []

    def new():
        got.append("new")
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, got.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, new)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == ["new"]


def test_handler_exception_goes_to_exception_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def handler():
        loop.call_soon(loop.stop)
        raise ValueError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, handler)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)


def test_remove_signal_handler_return_values(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, print)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_restores_default_disposition(loop):
    loop.add_signal_handler(signal.SIGUSR1, print)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_remove_sigint_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, print)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_removed_handler_not_called(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")
    loop.remove_signal_handler(signal.SIGUSR2)
    signal.signal(signal.SIGUSR2, lambda *a: None)  # don't die from SIG_DFL
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert got == []


def test_close_removes_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, print)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    # No wakeup fd left behind either.
    assert signal.set_wakeup_fd(-1) == -1


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_uncatchable_signal(loop, sig):
    with pytest.raises(RuntimeError, match=rf"^sig {int(sig)} cannot be caught$"):
        loop.add_signal_handler(sig, print)
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


@pytest.mark.parametrize("sig", [0, -1, 999, signal.NSIG])
def test_invalid_signal_number(loop, sig):
    with pytest.raises(ValueError, match=rf"^invalid signal number {sig}$"):
        loop.add_signal_handler(sig, print)


@pytest.mark.parametrize("sig", [0, 999])
def test_remove_invalid_signal_number(loop, sig):
    with pytest.raises(ValueError, match=rf"^invalid signal number {sig}$"):
        loop.remove_signal_handler(sig)


@pytest.mark.parametrize("sig", ["SIGUSR1", 1.5, None])
def test_signal_not_int(loop, sig):
    with pytest.raises(TypeError, match=r"^sig must be an int"):
        loop.add_signal_handler(sig, print)
    with pytest.raises(TypeError, match=r"^sig must be an int"):
        loop.remove_signal_handler(sig)


def test_signal_enum_accepted(loop):
    loop.add_signal_handler(signal.Signals.SIGUSR1, print)
    assert loop.remove_signal_handler(int(signal.SIGUSR1)) is True


async def coro_func():
    pass


def test_coroutine_function_rejected(loop):
    with pytest.raises(TypeError, match=r"^coroutines cannot be used with add_signal_handler\(\)$"):
        loop.add_signal_handler(signal.SIGUSR1, coro_func)
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_coroutine_object_rejected(loop):
    coro = coro_func()
    try:
        with pytest.raises(TypeError, match=r"coroutines cannot be used with add_signal_handler"):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()


def test_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        loop.add_signal_handler(signal.SIGUSR1, print)
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_from_non_main_thread(loop):
    errors = []

    def other():
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except BaseException as exc:  # record the exact type
            errors.append(exc)

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert len(errors) == 1
    assert type(errors[0]) is RuntimeError
    assert "main thread" in str(errors[0])
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.mark.parametrize("debug", [False, True], ids=["normal", "debug"])
def test_add_from_non_main_thread_while_the_loop_waits(loop, debug):
    """Refused for the reason stock gives (set_wakeup_fd), not for the thread the loop's own
    self-pipe reader is added from: add_reader works from any thread, the poll included."""
    loop.set_debug(debug)
    errors = []

    def other():
        time.sleep(0.05)
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except BaseException as exc:  # record the exact type
            errors.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=other)
    th.start()
    handle = loop.call_later(5, loop.stop)
    loop.run_forever()
    th.join()
    handle.cancel()
    assert len(errors) == 1
    assert type(errors[0]) is RuntimeError
    assert "main thread" in str(errors[0])
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.mark.parametrize("debug", [False, True], ids=["normal", "debug"])
def test_main_thread_adds_a_handler_to_a_loop_running_in_another_thread(flavor, debug):
    """Only the main thread can set the wakeup fd; the loop may run elsewhere, and asyncio's
    add_signal_handler has no thread check, in debug mode either."""
    lp = flavor.new_event_loop()
    lp.set_debug(debug)
    got = []
    started = threading.Event()

    def run():
        lp.call_soon(started.set)
        lp.call_later(5, lp.stop)
        lp.run_forever()

    th = threading.Thread(target=run)
    th.start()
    try:
        assert started.wait(5)
        lp.add_signal_handler(signal.SIGUSR1, lambda: (got.append("sig"), lp.stop()))
        os.kill(os.getpid(), signal.SIGUSR1)
    finally:
        th.join()
        lp.remove_signal_handler(signal.SIGUSR1)
        lp.close()
    assert got == ["sig"]


# --- Ctrl-C in child processes ---------------------------------------------


def interrupt_child(spawn_python, code):
    proc = spawn_python([sys.executable, "-c", code])
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.poll() is not None else line
    time.sleep(0.3)  # let it settle into its blocking poll
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    elapsed = time.monotonic() - t0
    return proc.returncode, err, elapsed


def test_ctrl_c_interrupts_idle_run_forever(flavor, spawn_python):
    code = flavor.python_code(
        f"loop = {flavor.loop_expr}\nprint('ready', flush=True)\nloop.run_forever()\n"
    )
    rc, err, elapsed = interrupt_child(spawn_python, code)
    assert elapsed < 5
    assert rc == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err


def test_ctrl_c_interrupts_idle_run_until_complete(flavor, spawn_python):
    code = flavor.python_code(
        f"loop = {flavor.loop_expr}\n"
        "print('ready', flush=True)\n"
        "loop.run_until_complete(loop.create_future())\n"
    )
    rc, err, elapsed = interrupt_child(spawn_python, code)
    assert elapsed < 5
    assert rc == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err


def test_ctrl_c_interrupts_run_with_long_sleep(flavor, spawn_python):
    code = flavor.python_code(
        "async def main():\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        f"{flavor.run_expr}(main())\n"
    )
    rc, err, elapsed = interrupt_child(spawn_python, code)
    assert elapsed < 5
    assert rc == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err


def test_ctrl_c_cancels_main_task_under_run(flavor, spawn_python):
    # asyncio.Runner turns the first Ctrl-C into a cancellation of the main task.
    code = flavor.python_code(
        "async def main():\n"
        "    print('ready', flush=True)\n"
        "    try:\n"
        "        await asyncio.sleep(3600)\n"
        "    except asyncio.CancelledError:\n"
        "        print('cancelled', flush=True)\n"
        "        raise\n"
        f"{flavor.run_expr}(main())\n"
    )
    proc = spawn_python([sys.executable, "-c", code])
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert "cancelled" in out
    assert "KeyboardInterrupt" in err
    assert proc.returncode == -signal.SIGINT, err


def test_sigint_handler_via_add_signal_handler_in_child(flavor, spawn_python):
    code = flavor.python_code(
        "import signal\n"
        f"loop = {flavor.loop_expr}\n"
        "def on_int():\n"
        "    print('handled', flush=True)\n"
        "    loop.stop()\n"
        "loop.add_signal_handler(signal.SIGINT, on_int)\n"
        "print('ready', flush=True)\n"
        "loop.run_forever()\n"
        "loop.close()\n"
        "print('clean exit', flush=True)\n"
    )
    proc = spawn_python([sys.executable, "-c", code])
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 0, err
    assert out.split() == ["handled", "clean", "exit"]


def test_signal_received_while_not_running_is_delivered_later(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "late")
    os.kill(os.getpid(), signal.SIGUSR1)  # loop not running yet
    assert got == []
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert got == ["late"]


def test_signal_handler_context_is_copy_at_registration(loop):

    var = contextvars.ContextVar("sig_var", default="unset")
    got = []

    def handler():
        got.append(var.get())
        loop.stop()

    token = var.set("registered")
    try:
        loop.add_signal_handler(signal.SIGUSR1, handler)
    finally:
        var.reset(token)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == ["registered"]


def test_ctrl_c_in_process_interrupts_blocked_loop(loop):
    # Default SIGINT disposition (KeyboardInterrupt) while the loop sits in its poll.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    safety = loop.call_later(10, loop.stop)
    timer = threading.Timer(0.2, os.kill, args=(os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    elapsed = time.monotonic() - t0
    timer.join()
    assert elapsed < 5
    assert not loop.is_running()
    # The loop is still usable.
    safety.cancel()
    out = []
    loop.call_soon(out.append, "again")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["again"]


def test_ctrl_c_in_process_interrupts_run_until_complete(loop):
    async def main():
        await asyncio.sleep(10)

    timer = threading.Timer(0.2, os.kill, args=(os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(main())
    timer.join()
    assert time.monotonic() - t0 < 5
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))


def test_ctrl_c_interrupts_busy_loop(flavor, spawn_python):
    code = flavor.python_code(
        f"loop = {flavor.loop_expr}\n"
        "def spin():\n"
        "    loop.call_soon(spin)\n"
        "loop.call_soon(spin)\n"
        "print('ready', flush=True)\n"
        "loop.run_forever()\n"
    )
    rc, err, elapsed = interrupt_child(spawn_python, code)
    assert elapsed < 5
    assert rc == -signal.SIGINT
    assert "KeyboardInterrupt" in err


def test_ctrl_c_exit_status_is_sigint(flavor, spawn_python):
    # An uncaught KeyboardInterrupt makes CPython die "by SIGINT" (status -2).
    code = flavor.python_code(
        f"loop = {flavor.loop_expr}\nprint('ready', flush=True)\nloop.run_forever()\n"
    )
    rc, err, _ = interrupt_child(spawn_python, code)
    assert rc == -signal.SIGINT, err


def test_close_at_interpreter_shutdown_skips_handler_removal(loop, monkeypatch):
    # As asyncio: while the interpreter finalizes, close() leaves the process's signal
    # dispositions alone (the signal module may be half torn down) and says so.
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    monkeypatch.setattr(sys, "is_finalizing", lambda: True)
    try:
        with pytest.warns(ResourceWarning, match="skipping signal handlers removal"):
            loop.close()
        assert loop._signal_handlers == {}
        assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
