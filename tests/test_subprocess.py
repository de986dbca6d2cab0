"""Subprocesses: loop.subprocess_exec/_shell with a SubprocessProtocol, asyncio's
create_subprocess_exec/_shell streams API, Popen arguments, bad input, many children, no zombie
or fd left behind, cancellation; and how ferroloop notices a child's exit (a pidfd in its
reactor, a waitpid thread where pidfds are refused, or a child watcher set on the policy).
"""

import asyncio
import contextlib
import errno
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
from net_helpers import MiB, digest, fd_count, payload, run, settle_fds
from versions import DefaultPolicy, get_policy, set_policy

pytestmark = pytest.mark.timeout(60)

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

MISSING_PROGRAM = "/nonexistent/ferroloop-no-such-program"

# Python 3.11 and 3.12 consult a child watcher set on the policy; later versions have none.
HAS_POLICY_WATCHERS = sys.version_info < (3, 13)
needs_policy_watchers = pytest.mark.skipif(
    not HAS_POLICY_WATCHERS,
    reason="policy child watchers are only consulted by asyncio on Python 3.11 and 3.12",
)


@pytest.fixture(autouse=True)
def fresh_policy():
    """Run every test under a new default policy, restoring the previous one afterwards.

    On 3.11/3.12 the stock loop's first subprocess makes the policy create a child watcher,
    which would then change how a later test's ferroloop loop waits for its children (see
    test_ferroloop_implicit_policy_watcher_keeps_pidfd).
    """
    saved = get_policy()
    set_policy(DefaultPolicy())
    try:
        yield
    finally:
        set_policy(saved)


# -- helpers ---------------------------------------------------------------------------------


def py(code: str) -> list[str]:
    """argv running ``code`` in an isolated child interpreter (no PYTHON* variables)."""
    return [sys.executable, "-I", "-c", code]


# Child: echo stdin to stdout prefixed with its pid, reversed to stderr, then exit 3.
PID_ECHO = py(
    "import os, sys\n"
    "data = sys.stdin.buffer.read()\n"
    "sys.stdout.buffer.write(b'%d:' % os.getpid() + data)\n"
    "sys.stdout.flush()\n"
    "sys.stderr.buffer.write(b'err:' + data[::-1])\n"
    "sys.exit(3)\n"
)


class ProcRecorder(asyncio.SubprocessProtocol):
    """Records every SubprocessProtocol callback as a tuple, and the bytes of each pipe.

    ``exited`` resolves with the returncode on process_exited, ``done`` on connection_lost.
    """

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.events: list[tuple] = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.exited = loop.create_future()
        self.done = loop.create_future()
        self._waiters: list[tuple[int, bytes, asyncio.Future]] = []

    def connection_made(self, transport):
        self.events.append(("made",))
        self.transport = transport

    def pipe_data_received(self, fd, data):
        assert isinstance(data, bytes), type(data)
        self.events.append(("data", fd))
        self.data[fd] += data
        for wfd, needle, fut in self._waiters:
            if wfd == fd and needle in self.data[fd] and not fut.done():
                fut.set_result(None)

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append(("exited",))
        self.exited.set_result(self.transport.get_returncode())

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(exc)

    async def wait_output(self, fd: int, needle: bytes):
        if needle not in self.data[fd]:
            fut = self.loop.create_future()
            self._waiters.append((fd, needle, fut))
            await fut

    def assert_callback_order(self, pipe_fds):
        """made first, lost last, one process_exited, each pipe lost once after its data."""
        names = [e[0] for e in self.events]
        assert names[0] == "made" and names.count("made") == 1, self.events
        assert self.events[-1] == ("lost", None) and names.count("lost") == 1, self.events
        assert names.count("exited") == 1, self.events
        lost = {e[1]: (i, e[2]) for i, e in enumerate(self.events) if e[0] == "pipe_lost"}
        assert sorted(lost) == sorted(pipe_fds), self.events
        assert names.count("pipe_lost") == len(pipe_fds), self.events
        for fd, (index, exc) in lost.items():
            assert exc is None, (fd, exc)
            assert ("data", fd) not in self.events[index:], f"data on fd {fd} after its loss"


async def spawn(loop, *args, shell=False, **kwargs):
    """loop.subprocess_exec(*args) or loop.subprocess_shell(args[0]) with a ProcRecorder."""
    if shell:
        (cmd,) = args
        return await loop.subprocess_shell(lambda: ProcRecorder(loop), cmd, **kwargs)
    return await loop.subprocess_exec(lambda: ProcRecorder(loop), *args, **kwargs)


async def communicate(*args, input=None, shell=False, **kwargs):
    """(returncode, stdout, stderr, pid) of a child run with asyncio's streams API."""
    kwargs.setdefault("stdout", PIPE)
    kwargs.setdefault("stderr", PIPE)
    if input is not None:
        kwargs.setdefault("stdin", PIPE)
    if shell:
        (cmd,) = args
        proc = await asyncio.create_subprocess_shell(cmd, **kwargs)
    else:
        proc = await asyncio.create_subprocess_exec(*args, **kwargs)
    out, err = await proc.communicate(input)
    return proc.returncode, out, err, proc.pid


async def exit_code(*args, shell=False, **kwargs):
    if shell:
        (cmd,) = args
        proc = await asyncio.create_subprocess_shell(cmd, **kwargs)
    else:
        proc = await asyncio.create_subprocess_exec(*args, **kwargs)
    return await proc.wait()


async def killed_code():
    proc = await asyncio.create_subprocess_exec("sleep", "60")
    proc.kill()
    return await proc.wait()


async def mixed_exits():
    """Children exiting in different ways, concurrently: [0, 7, -SIGKILL] when all is well."""
    return await asyncio.gather(exit_code("true"), exit_code("exit 7", shell=True), killed_code())


MIXED_EXITS = [0, 7, -signal.SIGKILL]


async def wait_until(predicate, timeout: float = 10.0):
    """Yield to the loop until ``predicate()`` holds (pipe transports close a few callbacks
    after the child's exit is reported)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def assert_reaped(pids):
    """Every pid was waited for by the loop: none is left a zombie (or still running)."""
    left = []
    for pid in pids:
        try:
            status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        left.append((pid, status))
    assert not left, f"children not reaped by the loop (pid, waitpid status): {left}"


def pidfds() -> set[int]:
    """The process's open pidfds."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[pidfd]":
                found.add(int(name))
    return found


def require_pidfd():
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError) as exc:
        pytest.skip(f"os.pidfd_open is unavailable here: {exc!r}")


def collect_errors(loop) -> list[dict]:
    contexts: list[dict] = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    return contexts


async def exit_mechanism():
    """Run a ``cat`` child and report how its exit is waited for while it runs.

    Returns (threads started, pidfds opened, returncode); waits for the extra threads to end.
    """
    threads = set(threading.enumerate())
    fds = pidfds()
    proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=DEVNULL)
    await asyncio.sleep(0.05)  # a watcher thread, if any, is started by now
    new_threads = set(threading.enumerate()) - threads
    new_pidfds = pidfds() - fds
    proc.stdin.close()  # cat exits on EOF
    code = await proc.wait()
    await wait_until(lambda: not any(t.is_alive() for t in new_threads))
    assert pidfds() - fds == set(), "pidfd left open after the child exited"
    assert_reaped([proc.pid])
    return len(new_threads), len(new_pidfds), code


@contextlib.contextmanager
def policy_watcher(watcher):
    """Set ``watcher`` as the policy's child watcher (3.11/3.12), closing it afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(watcher)
    try:
        yield watcher
    finally:
        watcher.close()


# -- SubprocessProtocol ---------------------------------------------------------------------


def test_exec_protocol_pipes_and_callbacks(loop):
    async def main():
        tr, pr = await spawn(loop, *PID_ECHO)
        assert pr.transport is tr
        assert isinstance(tr.get_pid(), int) and tr.get_pid() > 0
        assert tr.get_returncode() is None  # blocked reading stdin
        stdin, stdout, stderr = (tr.get_pipe_transport(fd) for fd in (0, 1, 2))
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(stdout, asyncio.ReadTransport)
        assert isinstance(stderr, asyncio.ReadTransport)
        assert tr.get_pipe_transport(3) is None
        stdin.write(b"hello")
        stdin.close()
        assert await pr.exited == 3
        assert await pr.done is None
        return tr, pr

    tr, pr = run(loop, main())
    assert bytes(pr.data[1]) == b"%d:hello" % tr.get_pid()
    assert bytes(pr.data[2]) == b"err:olleh"
    assert tr.get_returncode() == 3
    pr.assert_callback_order([0, 1, 2])
    assert_reaped([tr.get_pid()])
    with pytest.raises(ProcessLookupError):
        tr.kill()  # the child is gone
    tr.close()


def test_shell_protocol(loop):
    async def main():
        tr, pr = await spawn(loop, "echo out; echo err >&2; exit 5", shell=True, stdin=DEVNULL)
        assert tr.get_pipe_transport(0) is None
        await pr.done
        return tr, pr

    tr, pr = run(loop, main())
    assert (bytes(pr.data[1]), bytes(pr.data[2])) == (b"out\n", b"err\n")
    assert tr.get_returncode() == 5 and pr.exited.result() == 5
    pr.assert_callback_order([1, 2])
    tr.close()


def test_protocol_without_pipes(loop, tmp_path):
    """stdin/stdout/stderr as fds or files: no pipe transports, connection_lost after exit."""
    (tmp_path / "in").write_bytes(b"from a file")
    child = py(
        "import sys\nsys.stdout.write(sys.stdin.read().upper())\nsys.stderr.write('to stderr')\n"
    )

    async def main():
        fd_in = os.open(tmp_path / "in", os.O_RDONLY)
        fd_err = os.open(tmp_path / "err", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with open(tmp_path / "out", "wb") as f_out:
                tr, pr = await spawn(loop, *child, stdin=fd_in, stdout=f_out, stderr=fd_err)
                assert [tr.get_pipe_transport(fd) for fd in (0, 1, 2)] == [None] * 3
                await pr.done
        finally:
            os.close(fd_in)
            os.close(fd_err)
        return tr, pr

    tr, pr = run(loop, main())
    assert tr.get_returncode() == 0
    assert pr.events == [("made",), ("exited",), ("lost", None)]
    assert (tmp_path / "out").read_bytes() == b"FROM A FILE"
    assert (tmp_path / "err").read_bytes() == b"to stderr"
    tr.close()


@pytest.mark.parametrize(
    "how, signum",
    [("kill", signal.SIGKILL), ("terminate", signal.SIGTERM), ("send_signal", signal.SIGUSR1)],
)
def test_transport_signals_give_negative_returncode(loop, how, signum):
    async def main():
        tr, pr = await spawn(loop, "sleep", "60")
        if how == "send_signal":
            tr.send_signal(signum)
        else:
            getattr(tr, how)()
        assert await pr.exited == -signum
        await pr.done
        return tr, pr

    tr, pr = run(loop, main())
    assert tr.get_returncode() == -signum
    pr.assert_callback_order([0, 1, 2])
    assert_reaped([tr.get_pid()])
    tr.close()


def test_send_signal_reaches_child_handler(loop):
    child = py(
        "import os, signal, time\n"
        "def handler(signum, frame):\n"
        "    os.write(1, b'got %d\\n' % signum)  # print() may be mid-flush\n"
        "    os._exit(7)\n"
        "signal.signal(signal.SIGUSR1, handler)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )

    async def main():
        tr, pr = await spawn(loop, *child, stdin=DEVNULL)
        await pr.wait_output(1, b"ready\n")
        tr.send_signal(signal.SIGUSR1)
        await pr.done
        return tr, pr

    tr, pr = run(loop, main())
    result = (tr.get_returncode(), bytes(pr.data[1]), bytes(pr.data[2]))
    assert result == (7, b"ready\ngot %d\n" % signal.SIGUSR1, b"")
    tr.close()


def test_close_kills_running_child(loop):
    async def main():
        tr, pr = await spawn(loop, "sleep", "60")
        tr.close()
        assert await pr.exited == -signal.SIGKILL
        await pr.done
        return tr, pr

    tr, pr = run(loop, main())
    assert tr.get_returncode() == -signal.SIGKILL
    pr.assert_callback_order([0, 1, 2])
    assert_reaped([tr.get_pid()])


# -- asyncio.create_subprocess_* ----------------------------------------------------------------


def test_communicate_4mib_round_trip_through_cat(loop):
    data = payload(4 * MiB, seed=30)
    code, out, err, _ = run(loop, communicate("cat", input=data))
    assert code == 0 and err == b""
    assert len(out) == len(data) and digest(out) == digest(data)


def test_communicate_large_stdout_and_stderr_together(loop):
    """Both pipes filled at once: communicate must drain them concurrently."""
    data = payload(4 * MiB, seed=31)
    child = py(
        "import sys\n"
        "d = sys.stdin.buffer.read()\n"
        "sys.stdout.buffer.write(d)\n"
        "sys.stderr.buffer.write(d[::-1])\n"
    )
    code, out, err, _ = run(loop, communicate(*child, input=data))
    assert code == 0
    assert digest(out) == digest(data)
    assert digest(err) == digest(data[::-1])


def test_communicate_through_shell(loop):
    code, out, err, _ = run(
        loop, communicate("tr a-z A-Z; echo done >&2", input=b"abc", shell=True)
    )
    assert (code, out, err) == (0, b"ABC", b"done\n")


def test_pid_matches_child(loop):
    code, out, _, pid = run(loop, communicate(*py("import os; print(os.getpid())")))
    assert code == 0 and int(out) == pid


@pytest.mark.parametrize("shell", [False, True], ids=["exec", "shell"])
@pytest.mark.parametrize("status", [0, 1, 42, 255])
def test_wait_returncode(loop, status, shell):
    async def main():
        if shell:
            proc = await asyncio.create_subprocess_shell(f"exit {status}")
        else:
            proc = await asyncio.create_subprocess_exec("sh", "-c", f"exit {status}")
        both = await asyncio.gather(proc.wait(), proc.wait())  # concurrent waiters
        again = await proc.wait()  # and after the exit
        return both, again, proc.returncode

    both, again, returncode = run(loop, main())
    assert both == [status, status] and again == status and returncode == status


@pytest.mark.parametrize("how", ["kill", "terminate", "send_signal"])
def test_process_signals(loop, how):
    signum = {"kill": signal.SIGKILL, "terminate": signal.SIGTERM}.get(how, signal.SIGUSR2)

    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "60")
        assert proc.returncode is None
        if how == "send_signal":
            proc.send_signal(signum)
        else:
            getattr(proc, how)()
        return await proc.wait(), proc.pid

    code, pid = run(loop, main())
    assert code == -signum
    assert_reaped([pid])


# -- Popen arguments --------------------------------------------------------------------------


def test_env(loop, monkeypatch):
    monkeypatch.setenv("FERROLOOP_TEST_PARENT", "1")
    show = py("import os; print(os.environ.get('FOO'), os.environ.get('FERROLOOP_TEST_PARENT'))")

    async def main():
        replaced = await communicate(*show, env={"FOO": "bar"})
        inherited = await communicate(*show)
        return replaced[1], inherited[1]

    replaced, inherited = run(loop, main())
    assert replaced == b"bar None\n"
    assert inherited == b"None 1\n"


def test_cwd(loop, tmp_path):
    code, out, _, _ = run(loop, communicate(*py("import os; print(os.getcwd())"), cwd=tmp_path))
    assert code == 0
    assert os.path.realpath(out.decode().strip()) == os.path.realpath(tmp_path)


def test_pass_fds(loop):
    child = py(
        "import os, sys\n"
        "fd = int(sys.argv[1])\n"
        "try:\n"
        "    os.write(fd, b'via-fd')\n"
        "except OSError:\n"
        "    print('closed')\n"
    )
    r, w = os.pipe()
    try:

        async def main():
            passed = await communicate(*child, str(w), pass_fds=(w,))
            not_passed = await communicate(*child, str(w))
            return passed, not_passed

        passed, not_passed = run(loop, main())
        os.close(w)
        w = -1
        assert passed[:2] == (0, b"")
        assert os.read(r, 100) == b"via-fd"
        assert not_passed[:2] == (0, b"closed\n")  # close_fds: nothing else is inherited
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_start_new_session(loop):
    show = py("import os; print(os.getpid(), os.getsid(0))")

    async def main():
        return await communicate(*show, start_new_session=True), await communicate(*show)

    new, same = run(loop, main())
    pid, sid = map(int, new[1].split())
    assert pid == new[3] and sid == pid and sid != os.getsid(0)
    assert int(same[1].split()[1]) == os.getsid(0)


def test_preexec_fn(loop):
    saved = os.umask(0o022)  # a known parent umask, so the child's can only come from preexec_fn
    try:
        code, out, _, _ = run(
            loop, communicate("sh", "-c", "umask", preexec_fn=lambda: os.umask(0o027))
        )
    finally:
        os.umask(saved)
    assert code == 0 and out.strip() == b"0027"


def test_stderr_to_stdout(loop):
    child = py(
        "import sys\n"
        "sys.stdout.write('a'); sys.stdout.flush()\n"
        "sys.stderr.write('b'); sys.stderr.flush()\n"
        "sys.stdout.write('c')\n"
    )

    async def main():
        tr, pr = await spawn(loop, *child, stdin=DEVNULL, stderr=STDOUT)
        assert tr.get_pipe_transport(2) is None
        await pr.done
        tr.close()
        return pr, await communicate(*child, stderr=STDOUT)

    pr, (code, out, err, _) = run(loop, main())
    assert bytes(pr.data[1]) == b"abc" and pr.data[2] == b""
    assert (code, out, err) == (0, b"abc", None)


def test_devnull(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "cat; echo lost", stdin=DEVNULL, stdout=DEVNULL, stderr=PIPE
        )
        assert proc.stdin is None and proc.stdout is None
        return await proc.communicate(), proc.returncode, await communicate("cat", stdin=DEVNULL)

    (out, err), code, (cat_code, cat_out, _, _) = run(loop, main())
    assert (out, err, code) == (None, b"", 0)
    assert (cat_code, cat_out) == (0, b"")  # stdin from /dev/null: immediate EOF


def test_streams_to_fd_and_file_object(loop, tmp_path):
    (tmp_path / "in").write_bytes(b"xyz")

    async def main():
        with open(tmp_path / "in", "rb") as f_in, open(tmp_path / "out", "wb") as f_out:
            fd_err = os.open(tmp_path / "err", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                proc = await asyncio.create_subprocess_shell(
                    "cat; echo oops >&2", stdin=f_in.fileno(), stdout=f_out, stderr=fd_err
                )
                assert (proc.stdin, proc.stdout, proc.stderr) == (None, None, None)
                return await proc.wait()
            finally:
                os.close(fd_err)

    assert run(loop, main()) == 0
    assert (tmp_path / "out").read_bytes() == b"xyz"
    assert (tmp_path / "err").read_bytes() == b"oops\n"


# -- bad input --------------------------------------------------------------------------------


def test_missing_executable(loop):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(MISSING_PROGRAM)
        with pytest.raises(FileNotFoundError):
            await loop.subprocess_exec(asyncio.SubprocessProtocol, MISSING_PROGRAM, "arg")
        # Through a shell the failure is the shell's exit status instead.
        return await communicate(MISSING_PROGRAM, shell=True)

    code, out, err, _ = run(loop, main())
    assert code == 127 and out == b"" and err


def test_bad_cwd_and_non_executable(loop, tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o600)

    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("true", cwd=tmp_path / "missing")
        with pytest.raises(PermissionError):
            await asyncio.create_subprocess_exec(str(script))

    run(loop, main())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": True}, "text must be False"),
        ({"universal_newlines": True}, "universal_newlines must be False"),
        ({"encoding": "utf-8"}, "encoding must be None"),
        ({"errors": "strict"}, "errors must be None"),
        ({"bufsize": 1}, "bufsize must be 0"),
    ],
    ids=["text", "universal_newlines", "encoding", "errors", "bufsize"],
)
def test_text_mode_rejected(loop, kwargs, message):
    async def main():
        with pytest.raises(ValueError, match=message):
            await loop.subprocess_exec(asyncio.SubprocessProtocol, "true", **kwargs)
        with pytest.raises(ValueError, match=message):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, "true", **kwargs)
        with pytest.raises(ValueError, match=message):
            await asyncio.create_subprocess_exec("true", **kwargs)
        with pytest.raises(ValueError, match=message):
            await asyncio.create_subprocess_shell("true", **kwargs)

    run(loop, main())


def test_shell_argument_checks(loop):
    async def main():
        with pytest.raises(ValueError, match="cmd must be a string"):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, ["true"])
        with pytest.raises(ValueError, match="cmd must be a string"):
            await asyncio.create_subprocess_shell(["true"])
        with pytest.raises(ValueError, match="shell must be False"):
            await loop.subprocess_exec(asyncio.SubprocessProtocol, "true", shell=True)
        with pytest.raises(ValueError, match="shell must be True"):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, "true", shell=False)
        # A bytes command is accepted.
        return await exit_code(b"exit 4", shell=True)

    assert run(loop, main()) == 4


# -- many children, zombies, fds ----------------------------------------------------------------


def test_hundreds_of_concurrent_children(loop):
    count = 300

    async def main():
        return await asyncio.gather(
            *(communicate("echo", str(i), stderr=None) for i in range(count))
        )

    results = run(loop, main(), timeout=50)
    assert [r[0] for r in results] == [0] * count
    assert [r[1] for r in results] == [b"%d\n" % i for i in range(count)]
    pids = [r[3] for r in results]
    assert len(set(pids)) == count
    assert_reaped(pids)


def test_no_fd_leak(loop):
    async def workload():
        await communicate("cat", input=payload(256 * 1024, seed=32))
        await communicate("echo hi; echo err >&2", shell=True)
        await killed_code()
        tr, pr = await spawn(loop, "sleep", "60")
        tr.close()
        await pr.done
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(MISSING_PROGRAM, stdin=PIPE, stdout=PIPE)
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_exec("true", text=True)
        await exit_code("true", stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)

    async def main():
        await workload()  # warm up: whatever the first subprocess sets up lazily
        settle_fds()
        before = fd_count()
        for _ in range(3):
            await workload()
        settle_fds()
        await wait_until(lambda: fd_count() <= before)
        return before

    before = run(loop, main(), timeout=40)
    settle_fds()
    assert fd_count() == before
    assert pidfds() == set()


# -- cancellation ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_input", [False, True], ids=["read", "write"])
def test_cancelled_communicate_leaves_things_clean(loop, with_input):
    """Cancel communicate() while it reads (or is blocked writing 4 MiB), then kill."""
    errors = collect_errors(loop)
    data = payload(4 * MiB, seed=33) if with_input else None

    async def main():
        settle_fds()
        before = fd_count()
        proc = await asyncio.create_subprocess_exec("sleep", "60", stdin=PIPE, stdout=PIPE)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.communicate(data), 0.3)
        assert proc.returncode is None
        os.kill(proc.pid, 0)  # still running
        proc.kill()
        code = await proc.wait()
        await wait_until(lambda: fd_count() <= before)
        return code, proc.pid, before

    code, pid, before = run(loop, main())
    assert code == -signal.SIGKILL
    assert_reaped([pid])
    settle_fds()
    assert fd_count() == before
    assert errors == []


def test_cancelled_wait_then_exit_still_observed(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=DEVNULL)
        waiter = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.1)
        assert proc.returncode is None
        proc.stdin.close()  # cat exits on EOF
        return await proc.wait(), proc.pid

    code, pid = run(loop, main())
    assert code == 0
    assert_reaped([pid])


# -- how a child's exit is noticed ----------------------------------------------------------


def test_ferroloop_observes_exit_through_pidfd(ferro):
    require_pidfd()
    threads, new_pidfds, code = run(ferro, exit_mechanism())
    assert code == 0
    assert threads == 0, "a thread was started to wait for the child"
    assert new_pidfds == 1, "the child's exit was not watched through a pidfd"
    assert run(ferro, mixed_exits()) == MIXED_EXITS


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM], ids=["ENOSYS", "EPERM"])
def test_ferroloop_waitpid_thread_fallback(ferro, monkeypatch, err):
    refused = []

    def pidfd_open(pid, flags=0):
        refused.append(pid)
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    threads, new_pidfds, code = run(ferro, exit_mechanism())
    assert refused, "os.pidfd_open was not tried"
    assert code == 0
    assert new_pidfds == 0
    assert threads == 1, "no thread waits for the child when pidfds are refused"
    assert run(ferro, mixed_exits()) == MIXED_EXITS
    code, out, _, pid = run(ferro, communicate("cat", input=b"fallback"))
    assert (code, out) == (0, b"fallback")
    assert_reaped([pid])


@pytest.mark.parametrize("mechanism", ["pidfd", "thread"])
def test_ferroloop_child_is_not_reaped_before_its_exit_is_published(ferro, monkeypatch, mechanism):
    """Until proc.returncode is set the pid stays the (zombie) child's, so send_signal() can
    never reach a process that reused it (gh-127049): the watcher thread waits without reaping,
    and the loop's thread reaps and publishes in one step."""
    if mechanism == "pidfd":
        require_pidfd()
    else:

        def pidfd_open(pid, flags=0):
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

        monkeypatch.setattr(os, "pidfd_open", pidfd_open)

    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "60")
        proc.kill()
        # The loop's thread is busy: the watcher sees the exit but cannot publish it yet.
        time.sleep(0.5)
        unpublished = proc.returncode
        # Still a zombie: waitid(WNOWAIT) raises ChildProcessError once the pid was reaped.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        proc.send_signal(signal.SIGTERM)  # harmless: still our child's pid
        return unpublished, await proc.wait(), proc.pid

    unpublished, code, pid = run(ferro, main())
    assert unpublished is None
    assert code == -signal.SIGKILL
    assert_reaped([pid])


def test_ferroloop_pidfd_closed_when_waiting_fails(ferro, monkeypatch):
    """The pidfd is closed even when waitid() on it fails with an unexpected error (which then
    goes to the exception handler, as asyncio's _PidfdChildWatcher lets waitpid's out)."""
    require_pidfd()
    contexts = []
    ferro.set_exception_handler(lambda loop, context: contexts.append(context))
    real_waitid = os.waitid

    async def main():
        settle_fds()
        before = fd_count()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdin.read()", stdin=PIPE
        )

        def waitid(idtype, ident, options):
            if idtype == os.P_PIDFD:
                raise OSError(errno.EIO, "unexpected")
            return real_waitid(idtype, ident, options)

        monkeypatch.setattr(os, "waitid", waitid)
        proc.stdin.close()
        await wait_until(lambda: contexts)
        monkeypatch.undo()
        os.waitpid(proc.pid, 0)
        proc._transport._process_exited(0)
        await proc.wait()
        settle_fds()
        return before, fd_count()

    before, after = run(ferro, main())
    assert before == after
    assert isinstance(contexts[0]["exception"], OSError)


def test_ferroloop_pidfd_open_failing_for_one_child_uses_a_thread(ferro, monkeypatch):
    """pidfd_open failing for another reason (here EMFILE) concerns that child only."""
    require_pidfd()
    calls = []

    def pidfd_open(pid, flags=0):
        calls.append(pid)
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    threads, new_pidfds, code = run(ferro, exit_mechanism())
    assert (threads, new_pidfds, code) == (1, 0, 0)
    monkeypatch.undo()
    # The next child gets its pidfd again: EMFILE did not switch pidfds off for good.
    threads, new_pidfds, code = run(ferro, exit_mechanism())
    assert (threads, new_pidfds, code) == (0, 1, 0)
    assert len(calls) == 1


def test_ferroloop_unwatchable_child_is_killed_and_reaped(ferro, monkeypatch):
    """No pidfd and no thread: the spawn fails and the child neither runs on nor lingers."""
    pids = []

    def pidfd_open(pid, flags=0):
        pids.append(pid)
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    def start(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        run(ferro, asyncio.create_subprocess_exec("sleep", "60"))
    monkeypatch.undo()
    (pid,) = pids
    assert_reaped([pid])


@needs_policy_watchers
def test_explicit_policy_child_watcher_is_used(loop, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)

        class ChosenWatcher(asyncio.ThreadedChildWatcher):
            """A watcher the program chose (asyncio's default one, ferroloop replaces)."""

        watcher = ChosenWatcher()
    added = []
    add_child_handler = watcher.add_child_handler

    def spy(pid, callback, *args):
        added.append(pid)
        return add_child_handler(pid, callback, *args)

    monkeypatch.setattr(watcher, "add_child_handler", spy)
    with policy_watcher(watcher):
        code, out, _, pid = run(loop, communicate("cat", input=b"watched"))
        assert run(loop, mixed_exits()) == MIXED_EXITS
    assert (code, out) == (0, b"watched")
    assert added[0] == pid and len(added) == 1 + len(MIXED_EXITS)
    assert_reaped([pid])


@needs_policy_watchers
def test_ferroloop_implicit_policy_watcher_keeps_pidfd(ferro):
    """A watcher the policy created on its own is not one the program chose.

    On 3.11/3.12 the stock loop's first subprocess (or any call to asyncio.get_child_watcher())
    makes the default policy create its default watcher (a ThreadedChildWatcher on 3.11);
    ferroloop should still use its pidfds afterwards, not one waiting thread per child.
    """
    require_pidfd()
    stock = asyncio.SelectorEventLoop()
    try:
        assert run(stock, exit_code("true")) == 0
    finally:
        stock.close()
    threads, new_pidfds, code = run(ferro, exit_mechanism())
    assert code == 0
    assert (threads, new_pidfds) == (0, 1), "ferroloop switched to the policy's own watcher"


def test_ferroloop_close_after_exit_keeps_the_real_returncode(ferro):
    """close() between the child's exit and the loop noticing it reaps the child (Popen.poll);
    the returncode reported is still the child's, not 255.

    ferroloop only: on the stock loop it is a race (3.11's watcher thread reports 255 when
    Popen.poll() wins, as 3.12's pidfd watcher always does).
    """
    loop = ferro

    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: ProcRecorder(loop), "sh", "-c", "exit 3", stdin=None, stdout=None, stderr=None
        )
        pid = transport.get_pid()
        # Block the loop until the child is a zombie, then close before the loop can look.
        deadline = time.monotonic() + 10
        while not _is_zombie(pid):
            assert time.monotonic() < deadline, "child did not exit"
            time.sleep(0.01)
        transport.close()
        await asyncio.wait_for(proto.exited, 10)
        return transport.get_returncode()

    assert run(loop, main()) == 3


def _is_zombie(pid):
    """Exited: a zombie, or already reaped (asyncio's watcher thread may be that quick)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_ferroloop_child_outliving_its_loop_is_reaped(ferro):
    """A child still running when its loop closes is reaped once it exits: no zombie.

    ferroloop only: stock 3.11's thread watcher does the same, 3.12's pidfd watcher leaves a
    zombie.
    """
    loop = ferro

    async def spawn():
        return await asyncio.create_subprocess_exec("sleep", "0.3")

    proc = run(loop, spawn())
    pid = proc.pid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        loop.close()
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}"):
            assert time.monotonic() < deadline, "child left a zombie after its loop closed"
            time.sleep(0.02)
        del proc
        gc.collect()  # the transport's "unclosed" warning belongs here, not to a later test
