"""``ferroloop.Loop``: the native ``LoopCore`` plus the parts of asyncio's ``BaseEventLoop`` that
are not on the hot path.

The native base owns the ready queue, the timers, the reactor and the run loop. What lives here is
cold code whose exact asyncio behaviour matters more than its speed: run_until_complete, the
executor, async generator finalization, the exception handler and signal handlers. Each method
follows the stdlib function of the same name (``asyncio/base_events.py``, ``unix_events.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import signal
import socket
import sys
import warnings
import weakref
from asyncio import base_events, coroutines, events, format_helpers, futures, tasks

from . import _metrics
from ._ferroloop import LoopCore, _call_soon_fastcall, _call_soon_threadsafe_fastcall
from ._metrics import MetricsMixin
from ._net import NetworkMixin
from ._unix import UnixMixin

__all__ = ["Loop"]

# asyncio's own test for a coroutine function: 3.14 deprecates the public name (it warns) and
# calls the private one it added.
_iscoroutinefunction = getattr(coroutines, "_iscoroutinefunction", None) or (
    coroutines.iscoroutinefunction
)

# Python 3.12 runs a custom exception handler in the context of the failing task, future or
# handle; 3.11 runs it in the loop's.
_HANDLER_IN_FAILING_CONTEXT = sys.version_info >= (3, 12)

# Logging goes through `base_events.logger` looked up at each call (it is asyncio's "asyncio"
# logger), so code and tests that patch `asyncio.base_events.logger` see our messages too.


def _run_until_complete_cb(fut):
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # Issue #22429: run_forever() already finished, no need to stop it.
            return
    futures._get_loop(fut).stop()


def _sighandler_noop(signum, frame):
    """Dummy signal handler: the real work happens through the wakeup fd."""


class Loop(LoopCore, MetricsMixin, NetworkMixin, UnixMixin, asyncio.AbstractEventLoop):
    """An asyncio event loop whose core is Rust."""

    # The hand-parsed entry point (src/fastcall.rs): asyncio's Futures and Tasks call it per step.
    call_soon = _call_soon_fastcall
    call_soon_threadsafe = _call_soon_threadsafe_fastcall

    def __init__(self):
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._signal_handlers = {}
        # fd -> transport, as asyncio's selector loop keeps it (_ensure_fd_no_transport, sendfile).
        self._transports = weakref.WeakValueDictionary()
        # Listening Unix socket -> inode of its file, which closing the server unlinks (3.13).
        self._unix_server_sockets = {}
        self._ssock = self._csock = None
        self._prev_wakeup_fd = -1
        # The servers made on this loop, for metrics() (ferroloop._net.Server adds itself).
        self._metrics_servers = weakref.WeakSet()
        self.slow_callback_duration = 0.1
        self.set_debug(coroutines._is_debug_mode())
        _metrics.loop_created(self)

    def __repr__(self):
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn=warnings.warn, _finalizing=sys.is_finalizing):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                try:
                    self.close()
                except Exception:
                    # At interpreter shutdown a loop still set as current can outlive the
                    # globals close() needs (sys, base_events... are None by then). The process
                    # is exiting: release the native core and stay quiet, as asyncio's loop is.
                    if not _finalizing():
                        raise
                    self._close_core()

    # -- fd watchers ---------------------------------------------------------------------------
    # The native methods refuse an fd a transport is watching right now; asyncio also refuses
    # the fd of a live transport that is not watching it (paused reading, empty buffer).
    # add_reader/add_writer return None, as asyncio's public ones; the native methods return the
    # handle, which the sock_* methods keep (asyncio's _add_reader/_add_writer do the same).

    def add_reader(self, fd, callback, *args):
        self._ensure_fd_no_transport(fd)
        LoopCore.add_reader(self, fd, callback, *args)

    def add_writer(self, fd, callback, *args):
        self._ensure_fd_no_transport(fd)
        LoopCore.add_writer(self, fd, callback, *args)

    def remove_reader(self, fd):
        self._ensure_fd_no_transport(fd)
        return LoopCore.remove_reader(self, fd)

    def remove_writer(self, fd):
        self._ensure_fd_no_transport(fd)
        return LoopCore.remove_writer(self, fd)

    # -- running and stopping ------------------------------------------------------------------

    def _check_closed(self):
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self):
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        old_agen_hooks = sys.get_asyncgen_hooks()
        self._enter_run()
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run_forever_core()
        finally:
            self._leave_run()
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def run_until_complete(self, future):
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # An exception is raised if the future didn't complete, so there is no need to log
            # the "destroy pending task" message.
            future._log_destroy_pending = False
        future.add_done_callback(_run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                # The coroutine raised a BaseException; consume it so it is not logged as
                # "never retrieved".
                future.exception()
            raise
        finally:
            future.remove_done_callback(_run_until_complete_cb)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            base_events.logger.debug("Close %r", self)
        _metrics.loop_closed(self)
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            # As asyncio: at interpreter shutdown the signal module may be half torn down.
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown stage, "
                "skipping signal handlers removal",
                ResourceWarning,
                source=self,
            )
            self._signal_handlers.clear()
        self._close_self_pipe()
        self._close_child_watcher()
        self._close_core()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # -- executors -----------------------------------------------------------------------------

    def _check_default_executor(self):
        if self._executor_shutdown_called:
            raise RuntimeError("Executor shutdown has been called")

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self.get_debug():
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            self._check_default_executor()
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    # asyncio's own, the running version's code (its signature, timeout= from 3.12, how the timeout
    # bounds the wait, the warning): it needs only the executor attributes and public methods.
    shutdown_default_executor = base_events.BaseEventLoop.shutdown_default_executor
    _do_shutdown = base_events.BaseEventLoop._do_shutdown

    # -- async generators ----------------------------------------------------------------------

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    async def shutdown_asyncgens(self):
        """Shutdown all active asynchronous generators."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing_agens = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[ag.aclose() for ag in closing_agens], return_exceptions=True)
        for result, agen in zip(results, closing_agens, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": "an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # -- debug ---------------------------------------------------------------------------------

    def set_debug(self, enabled):
        self._set_debug_flag(enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(base_events.constants.DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    def _check_callback(self, callback, method):
        if coroutines.iscoroutine(callback) or _iscoroutinefunction(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

    def _log_slow_callback(self, handle, dt):
        base_events.logger.warning(
            "Executing %s took %.3f seconds", base_events._format_handle(handle), dt
        )

    # -- exception handling --------------------------------------------------------------------

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler):
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """asyncio's default: log the message, the exception and the rest of the context."""
        message = context.get("message")
        if not message:
            message = "Unhandled exception in event loop"
        exception = context.get("exception")
        if exception is not None:
            exc_info = (type(exception), exception, exception.__traceback__)
        else:
            exc_info = False
        if (
            "source_traceback" not in context
            and getattr(self, "_current_handle", None) is not None
            and self._current_handle._source_traceback
        ):
            context["handle_traceback"] = self._current_handle._source_traceback
        log_lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key == "source_traceback":
                tb = "".join(format_helpers.traceback.format_list(value))
                value = "Object created at (most recent call last):\n"
                value += tb.rstrip()
            elif key == "handle_traceback":
                tb = "".join(format_helpers.traceback.format_list(value))
                value = "Handle created at (most recent call last):\n"
                value += tb.rstrip()
            else:
                value = repr(value)
            log_lines.append(f"{key}: {value}")
        base_events.logger.error("\n".join(log_lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                # Second protection layer for unexpected errors in the default implementation,
                # as well as for subclassed event loops with overloaded "default_exception_handler".
                base_events.logger.error("Exception in default exception handler", exc_info=True)
        else:
            try:
                ctx = None
                if _HANDLER_IN_FAILING_CONTEXT:
                    thing = context.get("task")
                    if thing is None:
                        # Even though Futures don't have a context, Task is a subclass of
                        # Future, and sometimes the 'future' key holds a Task.
                        thing = context.get("future")
                    if thing is None:
                        thing = context.get("handle")
                    if thing is not None and hasattr(thing, "get_context"):
                        ctx = thing.get_context()
                if ctx is not None and hasattr(ctx, "run"):
                    ctx.run(self._exception_handler, self, context)
                else:
                    self._exception_handler(self, context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                # Exception in the user set custom exception handler.
                try:
                    # Let's try default handler.
                    self.default_exception_handler(
                        {
                            "message": "Unhandled error in exception handler",
                            "exception": exc,
                            "context": context,
                        }
                    )
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException:
                    # Guard 'default_exception_handler' in case it is overloaded.
                    base_events.logger.error(
                        "Exception in default exception handler "
                        "while handling an unexpected error "
                        "in custom exception handler",
                        exc_info=True,
                    )

    # -- signals (asyncio's unix_events) -------------------------------------------------------

    def _make_self_pipe(self):
        # A socketpair whose write end is the interpreter's wakeup fd: the C-level signal handler
        # writes the signal number there and the loop reads it on its own thread.
        self._ssock, self._csock = socket.socketpair()
        self._ssock.setblocking(False)
        self._csock.setblocking(False)
        self.add_reader(self._ssock.fileno(), self._read_from_self)

    def _close_self_pipe(self):
        if self._ssock is None:
            return
        self.remove_reader(self._ssock.fileno())
        self._ssock.close()
        self._ssock = None
        self._csock.close()
        self._csock = None

    def _read_from_self(self):
        while True:
            try:
                data = self._ssock.recv(4096)
                if not data:
                    break
                for signum in data:
                    if signum:
                        self._handle_signal(signum)
            except InterruptedError:
                continue
            except BlockingIOError:
                break

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig, callback, *args):
        """Add a handler for a signal. UNIX only. Main thread only (RuntimeError otherwise)."""
        if coroutines.iscoroutine(callback) or _iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if self._csock is None:
            self._make_self_pipe()
        try:
            # set_wakeup_fd() raises ValueError if this is not the main thread of the main
            # interpreter.
            prev = signal.set_wakeup_fd(self._csock.fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        if not self._signal_handlers and prev != self._csock.fileno():
            self._prev_wakeup_fd = prev
        handle = self._make_handle(callback, args)
        self._signal_handlers[sig] = handle
        try:
            # Register a dummy signal handler to ask Python to write the signal number in the
            # wakeup file descriptor.
            signal.signal(sig, _sighandler_noop)
            # Set SA_RESTART to limit EINTR occurrences.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._restore_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise

    def _handle_signal(self, sig):
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return  # Assume it's some race condition.
        if handle.cancelled():
            self.remove_signal_handler(sig)
        else:
            self._add_callback(handle)

    def remove_signal_handler(self, sig):
        """Remove a handler for a signal. Return True if one was removed, False if none was set."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        if sig == signal.SIGINT:
            handler = signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise
        if not self._signal_handlers:
            self._restore_wakeup_fd()
        return True

    def _restore_wakeup_fd(self):
        try:
            signal.set_wakeup_fd(self._prev_wakeup_fd)
        except (ValueError, OSError) as exc:
            base_events.logger.info("set_wakeup_fd(%s) failed: %s", self._prev_wakeup_fd, exc)
        self._prev_wakeup_fd = -1


def _after_fork_in_child():
    # A forked child must not find the parent's loop running (asyncio does the same in 3.12).
    running = events._get_running_loop()
    if isinstance(running, Loop):
        events._set_running_loop(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
