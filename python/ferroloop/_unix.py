"""UDP, pipes and subprocesses for ``ferroloop.Loop``.

``UnixMixin`` is a base class of ``Loop``. As for stream networking (see ``_net``), the cold
orchestration is the running interpreter's own asyncio code, taken method by method; here the
transports are asyncio's too (``_SelectorDatagramTransport``, ``_UnixReadPipeTransport``,
``_UnixWritePipeTransport``, ``_UnixSubprocessTransport``): they only need the loop's internal
fd interface (``_add_reader``..., ``_transports``), which ``NetworkMixin`` provides natively.

What is ours is how a child's exit is noticed: a pidfd watched by the reactor, with a thread
per child blocked in ``waitpid()`` where the kernel has no pidfds (older than 5.3, or a
sandbox that refuses the call). A child watcher the program set on the policy (Python 3.11
and 3.12) is consulted instead, exactly as asyncio does, so code written for those watchers
keeps its behaviour; asyncio's default one is not a choice (see ``_policy_child_watcher``).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
from asyncio import events, log, selector_events, unix_events

from ._ferroloop import DatagramReader
from ._net import _BASE, _SELECTOR, _UNIX, borrow
from ._transports import transport_repr

__all__ = ["UnixMixin"]

# Child watchers on the policy: deprecated in 3.12, gone in 3.14 (and with them the need to ask
# the policy, whose getter warns there).
_POLICY_WATCHERS = sys.version_info < (3, 14)

# asyncio's methods that run unchanged on our loop, by the class that defines them.
_BORROWED = {
    _BASE: (
        "create_datagram_endpoint",
        "connect_read_pipe",
        "connect_write_pipe",
        "subprocess_exec",
        "subprocess_shell",
        "_log_subprocess",
    ),
    _SELECTOR: (
        "sock_recvfrom",
        "_sock_recvfrom",
        "sock_recvfrom_into",
        "_sock_recvfrom_into",
        "sock_sendto",
        "_sock_sendto",
    ),
    _UNIX: ("_child_watcher_callback",),
}


class DatagramTransport(selector_events._SelectorDatagramTransport):
    """asyncio's datagram transport, with native reads and sends for IPv4 and IPv6.

    ``DatagramReader`` (src/datagram.rs) does what asyncio's ``_read_ready`` and the common
    case of ``sendto`` do, without their per-datagram overheads; other families (Unix
    datagram sockets) and uncommon cases run asyncio's code. One datagram per readiness event,
    as asyncio (not a batch, as libuv), so callbacks the protocol schedules run before the
    next datagram arrives. The repr does not read the loop's selector (there is none).
    """

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        super().__init__(loop, sock, protocol, address, waiter, extra)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            self._reader = DatagramReader(sock, self.max_size)
        else:
            self._reader = None
        # asyncio decides between send() and sendto() on this, at every call.
        self._connected = bool(self._extra["peername"])

    def sendto(self, data, addr=None):
        # The common case natively (see DatagramReader.send): bytes, nothing buffered, the
        # connection alive, and a connected socket or a reply to the last sender. Anything
        # else, or a full socket buffer, takes asyncio's own path, checks and all.
        reader = self._reader
        if (
            reader is not None
            and type(data) is bytes
            and data
            and not self._buffer
            and not self._conn_lost
        ):
            address = self._address
            if address:
                if (addr is None or addr == address) and reader.send(
                    self._protocol, data, address, self._connected
                ):
                    return
            elif reader.send(self._protocol, data, addr, self._connected):
                return
        super().sendto(data, addr)

    def _read_ready(self):
        if self._reader is None:
            super()._read_ready()
        elif not self._conn_lost:
            self._reader.read(self._protocol)

    def __repr__(self):
        loop_open = self._loop is not None and not self._loop.is_closed()
        return transport_repr(self, not self._closing, self._buffer_size, show_io=loop_open)


# A descriptor that is never anybody's: the read end of a pipe whose write end is closed, so a
# write fails with EBADF, a read sees end of file, and epoll accepts it (it refuses /dev/null). A
# pipe transport whose pipe was closed under it acts on this instead of its old number (see
# _OwnedPipe). Made on first need, kept for the process.
_NO_FD = None


def _no_fd():
    global _NO_FD
    if _NO_FD is None:
        r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.close(w)
        _NO_FD = r
    return _NO_FD


class _OwnedPipe:
    """asyncio's pipe transports keep their pipe's number and call os.read()/os.write() and
    the loop's _add_reader()/_remove_reader() on it. If the program closes the pipe object under
    the transport, the number goes to the next file it opens, and asyncio's transport would
    then write into that file, read from it, or remove its registrations (the stock loop does).
    Before each of those methods this mixin checks that the pipe object still holds the number;
    once it does not, the transport drops its own registrations on the old number (only if they
    are still its own) and acts on a descriptor that is nobody's, so asyncio's code meets the
    EBADF (or end of file) it would meet for a closed pipe whose number was not reused."""

    def _check_pipe_fd(self):
        fd = self._fileno
        if fd == _NO_FD:
            return
        pipe = self._pipe
        try:
            if pipe is None or pipe.fileno() == fd:
                return
        except (ValueError, OSError):  # a closed file object
            pass
        loop = self._loop
        for write, remove in ((False, loop._remove_reader), (True, loop._remove_writer)):
            callback = loop._watcher_callback(fd, write)
            if getattr(callback, "__self__", None) is self:
                remove(fd)
        self._fileno = _no_fd()


def _guard_fd(cls, names):
    """Makes each method of `names` check the pipe's number first (see _OwnedPipe)."""
    for name in names:
        inner = getattr(cls.__mro__[2], name)

        def method(self, *args, _inner=inner):
            self._check_pipe_fd()
            return _inner(self, *args)

        # asyncio's qualified name: a handle of the method, in a log or an exception handler's
        # message, reads as the stock loop's ('_UnixWritePipeTransport._write_ready()'). Not
        # functools.wraps: its __wrapped__ would make format_helpers show a source location,
        # which asyncio's bound method has not.
        method.__name__ = name
        method.__qualname__ = inner.__qualname__
        method.__doc__ = inner.__doc__
        setattr(cls, name, method)
    return cls


class ReadPipeTransport(_OwnedPipe, unix_events._UnixReadPipeTransport):
    pass


class WritePipeTransport(_OwnedPipe, unix_events._UnixWritePipeTransport):
    pass


_guard_fd(ReadPipeTransport, ("pause_reading", "resume_reading", "_read_ready", "_close"))
_guard_fd(WritePipeTransport, ("write", "_write_ready", "_read_ready", "write_eof", "_close"))


class _ChildWatcher:
    """Tells a loop when its children exit: a pidfd in the reactor, else a waiting thread.

    One per loop; children are reaped with ``waitpid(pid)``, never ``waitpid(-1)``, so
    processes started outside the loop are left alone.
    """

    def __init__(self, loop):
        self._loop = loop
        self._pidfds = {}  # pid -> pidfd, while the reactor watches it
        # None until the first child tells whether this kernel hands out pidfds.
        self._use_pidfd = None if hasattr(os, "pidfd_open") else False

    def add_child_handler(self, pid, callback, *args):
        if self._use_pidfd is not False:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError as exc:
                # ENOSYS: kernel older than 5.3; EPERM: a seccomp filter refuses it. Anything
                # else (EMFILE...) concerns this child only: a thread watches it instead.
                if exc.errno in (errno.ENOSYS, errno.EPERM) and not self._use_pidfd:
                    self._use_pidfd = False
            else:
                self._use_pidfd = True
                self._pidfds[pid] = pidfd
                self._loop._add_reader(pidfd, self._pidfd_ready, pid, pidfd, callback, args)
                return
        thread = threading.Thread(
            target=self._wait_in_thread,
            name=f"ferroloop-waitpid-{pid}",
            args=(pid, callback, args),
            daemon=True,
        )
        thread.start()

    def _pidfd_ready(self, pid, pidfd, callback, args):
        del self._pidfds[pid]
        self._loop._remove_reader(pidfd)
        try:
            returncode = _reap_pidfd(pidfd, pid)
        finally:
            os.close(pidfd)
        callback(pid, returncode, *args)

    def _wait_in_thread(self, pid, callback, args):
        # The thread waits without reaping: the pid stays the child's until the loop's thread
        # reaps it and publishes the exit in one step, so send_signal() can never reach a pid
        # the kernel has handed to another process (gh-127049; the pidfd path does the same).
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # reaped elsewhere already: _reap says so
        try:
            self._loop.call_soon_threadsafe(self._reap_and_notify, pid, callback, args)
        except RuntimeError:
            _reap(pid)  # no zombie, whatever became of the loop
            if not self._loop.is_closed():
                raise
            log.logger.warning("Loop %r that handles pid %r is closed", self._loop, pid)

    def _reap_and_notify(self, pid, callback, args):
        callback(pid, _reap(pid), *args)

    def close(self):
        """Stop watching. Children still running are reaped by a thread each when they exit
        (as asyncio's thread watcher would), so none is left a zombie."""
        for pid, pidfd in self._pidfds.items():
            self._loop._remove_reader(pidfd)
            os.close(pidfd)
            threading.Thread(
                target=_reap, args=(pid,), name=f"ferroloop-waitpid-{pid}", daemon=True
            ).start()
        self._pidfds.clear()


def _reap(pid):
    """The exit code of child `pid`, waiting for it; None if it was reaped already."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


def _reap_pidfd(pidfd, pid):
    """The exit code of the exited child behind `pidfd`; None if it was reaped already.

    waitid(P_PIDFD) names the very process, so a child reaped elsewhere (Popen.poll) whose
    pid was reused meanwhile cannot make us wait for, or reap, the newcomer; kernels without
    it (5.3) take waitpid.
    """
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except ChildProcessError:
        return None
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return _reap(pid)
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _policy_child_watcher():
    """The child watcher the program chose (Python 3.11 and 3.12), else None.

    asyncio's default, the ThreadedChildWatcher the policy makes the first time anything asks
    for a watcher, is not a choice: our pidfd watcher does what it does (waitpid of each
    child), without a thread per child.
    """
    if not _POLICY_WATCHERS:
        return None
    watcher = getattr(events.get_event_loop_policy(), "_watcher", None)
    if watcher is None or type(watcher) is getattr(unix_events, "ThreadedChildWatcher", None):
        return None
    return watcher


class UnixMixin:
    """UDP, pipes and subprocesses: the rest of asyncio.AbstractEventLoop."""

    _child_watcher = None

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        if _policy_child_watcher() is not None:
            # The program chose a child watcher: asyncio's own code consults it.
            return await _UNIX._make_subprocess_transport(
                self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, **kwargs
            )
        watcher = self._child_watcher
        if watcher is None:
            watcher = self._child_watcher = _ChildWatcher(self)
        waiter = self.create_future()
        transp = unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs,
        )  # fmt: skip
        try:
            watcher.add_child_handler(transp.get_pid(), self._child_exited, transp)
        except BaseException:
            # No way to learn when it exits (no thread could be started): do not leave it
            # running unwatched, nor a zombie.
            transp.close()
            transp._proc.wait()
            raise
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def _child_exited(self, pid, returncode, transp):
        if returncode is None:
            # Reaped before the watcher could: by the transport's Popen (close() polls it), or
            # by a waitpid(-1) elsewhere in the program, when asyncio reports 255 too.
            returncode = transp._proc.returncode
            if returncode is None:
                log.logger.warning(
                    "child process pid %d exit status already read: will report returncode 255",
                    pid,
                )
                returncode = 255
        # At once, not in a later iteration as _child_watcher_callback does up to 3.13: the
        # child is reaped by now, and until the exit is published send_signal() would signal its
        # pid, which the kernel may have given to another process.
        transp._process_exited(returncode)

    def _close_child_watcher(self):
        if self._child_watcher is not None:
            self._child_watcher.close()
            self._child_watcher = None


borrow(UnixMixin, _BORROWED)
