"""add_reader / remove_reader / add_writer / remove_writer."""

import fcntl
import gc
import os
import resource
import socket
import time
import weakref

import pytest

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_reader_socketpair(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.stop()

    loop.add_reader(a.fileno(), on_readable)
    loop.call_later(0.01, b.send, b"hello")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [b"hello"]
    assert loop.remove_reader(a.fileno()) is True


def test_reader_not_called_without_data(loop, sockpair):
    a, _ = sockpair
    calls = []
    loop.add_reader(a.fileno(), calls.append, "called")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == []
    assert loop.remove_reader(a.fileno()) is True


def test_reader_pipe(loop, pipe):
    r, w = pipe
    got = []

    def on_readable():
        got.append(os.read(r, 100))
        loop.stop()

    loop.add_reader(r, on_readable)
    os.write(w, b"data")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [b"data"]
    assert loop.remove_reader(r) is True


def test_reader_with_file_object(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.stop()

    loop.add_reader(a, on_readable)  # object with fileno()
    b.send(b"obj")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [b"obj"]
    # Registration is keyed by the descriptor: removing via the int works.
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a) is False


def test_reader_with_custom_fileno_object(loop, pipe):
    r, w = pipe

    class Wrapper:
        def fileno(self):
            return r

    got = []

    def on_readable():
        got.append(os.read(r, 100))
        loop.stop()

    loop.add_reader(Wrapper(), on_readable)
    os.write(w, b"x")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [b"x"]
    assert loop.remove_reader(Wrapper()) is True


def test_reader_args(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable(x, y):
        got.append((x, y, a.recv(10)))
        loop.stop()

    loop.add_reader(a.fileno(), on_readable, 1, "two")
    b.send(b"z")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [(1, "two", b"z")]
    loop.remove_reader(a.fileno())


def test_reader_is_level_triggered(loop, sockpair):
    a, b = sockpair
    got = []

    def one_byte():
        got.append(a.recv(1))
        if len(got) == 5:
            # Stop a little later: no further calls must happen (no more data).
            loop.call_later(0.05, loop.stop)

    b.send(b"abcde")
    loop.add_reader(a.fileno(), one_byte)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert b"".join(got) == b"abcde"
    assert len(got) == 5
    loop.remove_reader(a.fileno())


def test_reader_level_triggered_pipe(loop, pipe):
    r, w = pipe
    got = []

    def one_byte():
        got.append(os.read(r, 1))
        if len(got) == 3:
            loop.call_later(0.05, loop.stop)

    os.write(w, b"123")
    loop.add_reader(r, one_byte)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [b"1", b"2", b"3"]
    loop.remove_reader(r)


def test_reader_sees_eof(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable():
        got.append(a.recv(10))
        loop.remove_reader(a.fileno())
        loop.stop()

    loop.add_reader(a.fileno(), on_readable)
    b.close()
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [b""]


def test_remove_reader_return_values(loop, sockpair):
    a, _ = sockpair
    assert loop.remove_reader(a.fileno()) is False
    loop.add_reader(a.fileno(), print)
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_remove_writer_return_values(loop, sockpair):
    a, _ = sockpair
    assert loop.remove_writer(a.fileno()) is False
    loop.add_writer(a.fileno(), print)
    assert loop.remove_writer(a.fileno()) is True
    assert loop.remove_writer(a.fileno()) is False


def test_removed_reader_not_called(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a.fileno(), calls.append, 1)
    assert loop.remove_reader(a.fileno()) is True
    b.send(b"data")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == []


def test_replace_reader(loop, sockpair):
    a, b = sockpair
    calls = []

    def old():
        calls.append("old")
        a.recv(10)

    def new():
        calls.append("new")
        a.recv(10)
        loop.stop()

    loop.add_reader(a.fileno(), old)
    loop.add_reader(a.fileno(), new)
    b.send(b"x")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert calls == ["new"]
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_replace_writer(loop, sockpair):
    a, _ = sockpair
    calls = []

    def new():
        calls.append("new")
        loop.remove_writer(a.fileno())
        loop.stop()

    loop.add_writer(a.fileno(), calls.append, "old")
    loop.add_writer(a.fileno(), new)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert calls == ["new"]


def test_writer_called_when_writable(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_writable():
        a.send(b"ping")
        calls.append("w")
        loop.remove_writer(a.fileno())
        loop.stop()

    loop.add_writer(a.fileno(), on_writable)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert calls == ["w"]
    assert b.recv(10) == b"ping"


def test_writer_is_level_triggered(loop, pipe):
    _, w = pipe
    calls = []

    def on_writable():
        calls.append(1)
        if len(calls) == 3:
            loop.remove_writer(w)
            loop.stop()

    loop.add_writer(w, on_writable)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert calls == [1, 1, 1]


def test_writer_with_file_object(loop, sockpair):
    a, _ = sockpair
    calls = []

    def on_writable():
        calls.append("w")
        loop.stop()

    loop.add_writer(a, on_writable)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert calls == ["w"]
    assert loop.remove_writer(a) is True


def test_reader_and_writer_on_same_fd(loop, sockpair):
    a, b = sockpair
    events = []

    def on_writable():
        events.append("w")
        loop.remove_writer(a.fileno())
        b.send(b"in")

    def on_readable():
        events.append(("r", a.recv(10)))
        loop.stop()

    loop.add_reader(a.fileno(), on_readable)
    loop.add_writer(a.fileno(), on_writable)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert events == ["w", ("r", b"in")]
    # Removing the writer left the reader in place.
    assert loop.remove_writer(a.fileno()) is False
    assert loop.remove_reader(a.fileno()) is True


def test_remove_reader_keeps_writer(loop, sockpair):
    a, _ = sockpair
    calls = []

    def on_writable():
        calls.append("w")
        loop.stop()

    loop.add_reader(a.fileno(), calls.append, "r")
    loop.add_writer(a.fileno(), on_writable)
    assert loop.remove_reader(a.fileno()) is True
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert calls == ["w"]
    assert loop.remove_writer(a.fileno()) is True


def test_many_readers(loop):
    pairs = [socket.socketpair() for _ in range(20)]
    try:
        got = {}

        def make(i, s):
            def on_readable():
                got[i] = s.recv(10)
                loop.remove_reader(s.fileno())
                if len(got) == len(pairs):
                    loop.stop()

            return on_readable

        for i, (a, _) in enumerate(pairs):
            a.setblocking(False)
            loop.add_reader(a.fileno(), make(i, a))
        for i, (_, b) in enumerate(pairs):
            b.send(str(i).encode())
        loop.call_later(5, loop.stop)
        loop.run_forever()
        assert got == {i: str(i).encode() for i in range(len(pairs))}
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_reader_in_coroutine(loop, sockpair):
    a, b = sockpair

    async def main():
        fut = loop.create_future()
        loop.add_reader(a.fileno(), lambda: fut.set_result(a.recv(10)))
        loop.call_later(0.01, b.send, b"async")
        try:
            return await fut
        finally:
            loop.remove_reader(a.fileno())

    assert loop.run_until_complete(main()) == b"async"


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_negative_fd(loop, method):
    with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
        getattr(loop, method)(-1, print)


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_negative_fd(loop, method):
    with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
        getattr(loop, method)(-1)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_object_without_fileno(loop, method):
    obj = object()
    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        getattr(loop, method)(obj, print)


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_object_without_fileno(loop, method):
    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        getattr(loop, method)(object())


def test_fileno_returning_garbage(loop):
    class Bad:
        def fileno(self):
            return "not an int"

    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        loop.add_reader(Bad(), print)


def test_bad_descriptor(loop):
    # A non-negative descriptor that is not open.
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError):
        loop.add_reader(fd, print)


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_on_closed_loop_returns_false(loop, sockpair, method):
    loop.close()
    assert getattr(loop, method)(sockpair[0].fileno()) is False


def test_remove_reader_after_fd_closed(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, print)
    a.close()
    b.close()
    # The registration is still known to the loop; removing it must not fail.
    assert loop.remove_reader(fd) is True
    assert loop.remove_reader(fd) is False


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_remove_closed_socket_object(loop, kind):
    """A socket closed after add_reader(sock)/add_writer(sock) (fileno() is -1 now) is found
    by identity, as asyncio's selector finds its key: removed, True, never called again, and
    its old fd number is no longer registered. (anyio closes its UNIX sockets this way.)"""
    a, b = socket.socketpair()
    a.setblocking(False)
    add, remove = getattr(loop, f"add_{kind}"), getattr(loop, f"remove_{kind}")
    calls = []
    fd = a.fileno()
    if kind == "writer":
        # Fill the buffer, so that the callback stays quiet until the socket is gone.
        with pytest.raises(BlockingIOError):
            while True:
                a.send(b"\0" * 65536)
    add(a, calls.append, kind)
    a.close()
    try:
        assert remove(a) is True
        assert remove(fd) is False
        # Forgotten with its registration: now it is just a closed socket.
        with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
            remove(a)
        loop.call_later(0.02, loop.stop)
        loop.run_forever()
        assert calls == []
    finally:
        b.close()


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_closed_socket_never_registered(loop, method):
    a, b = socket.socketpair()
    a.close()
    b.close()
    with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
        getattr(loop, method)(a)


def test_remove_closed_socket_registered_by_number(loop):
    """The identity search only knows the object the fd was registered with: a socket whose
    fd was registered as a number cannot be removed by the socket once it is closed."""
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, print)
    a.close()
    b.close()
    with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
        loop.remove_reader(a)
    assert loop.remove_reader(fd) is True


def test_reader_sees_hangup_on_pipe(loop, pipe):
    r, w = pipe
    got = []

    def on_readable():
        got.append(os.read(r, 10))
        loop.remove_reader(r)
        loop.stop()

    os.close(w)
    loop.add_reader(r, on_readable)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [b""]


def test_removing_other_reader_in_same_iteration(loop):
    # Both descriptors are ready in the same poll; whichever callback runs first
    # removes the other's registration, which then must not run.
    p1, p2 = socket.socketpair(), socket.socketpair()
    try:
        calls = []
        fds = [p1[0].fileno(), p2[0].fileno()]

        def make(me, other):
            def cb():
                calls.append(me)
                loop.remove_reader(me)
                loop.remove_reader(other)

            return cb

        loop.add_reader(fds[0], make(fds[0], fds[1]))
        loop.add_reader(fds[1], make(fds[1], fds[0]))
        p1[1].send(b"x")
        p2[1].send(b"y")
        time.sleep(0.01)  # both readable before the loop polls
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        assert len(calls) == 1
    finally:
        for s in (*p1, *p2):
            s.close()


def test_reader_removes_itself_and_readds_other_callback(loop, sockpair):
    a, b = sockpair
    calls = []

    def second():
        calls.append(("second", a.recv(10)))
        loop.remove_reader(a.fileno())
        loop.stop()

    def first():
        calls.append(("first", a.recv(1)))
        loop.remove_reader(a.fileno())
        loop.add_reader(a.fileno(), second)

    loop.add_reader(a.fileno(), first)
    b.send(b"12")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert calls == [("first", b"1"), ("second", b"2")]


def test_reader_exception_goes_to_handler_and_reader_stays(loop, sockpair):
    a, b = sockpair
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def bad():
        a.recv(1)
        if len(contexts) == 2:
            loop.call_soon(loop.stop)
        raise ValueError("reader failed")

    loop.add_reader(a.fileno(), bad)
    b.send(b"abc")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert len(contexts) == 3
    assert all(isinstance(c["exception"], ValueError) for c in contexts)
    assert all("handle" in c for c in contexts)
    assert loop.remove_reader(a.fileno()) is True


def test_keyboard_interrupt_from_reader(loop, sockpair):
    a, b = sockpair
    calls = []

    def reader():
        calls.append(a.recv(1))
        if len(calls) == 1:
            raise KeyboardInterrupt

    loop.add_reader(a.fileno(), reader)
    b.send(b"xy")
    loop.call_later(5, loop.stop)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert calls == [b"x"]
    # Still registered: the next run delivers the remaining byte.
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == [b"x", b"y"]
    assert loop.remove_reader(a.fileno()) is True


def test_high_numbered_fd(loop, sockpair):

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1600:
        new_soft = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
        assert new_soft > 1600, "cannot raise RLIMIT_NOFILE enough for this test"
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    a, b = sockpair
    hi = fcntl.fcntl(a.fileno(), fcntl.F_DUPFD, 1500)
    try:
        assert hi >= 1500
        got = []

        def on_readable():
            got.append(os.read(hi, 10))
            loop.stop()

        loop.add_reader(hi, on_readable)
        b.send(b"high")
        loop.call_later(5, loop.stop)
        loop.run_forever()
        assert got == [b"high"]
        assert loop.remove_reader(hi) is True
    finally:
        os.close(hi)
        if soft <= 1600:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_close_drops_reader_callbacks(loop, sockpair):

    a, _ = sockpair

    class Target:
        def on_readable(self):
            pass

    t = Target()
    ref = weakref.ref(t)
    loop.add_reader(a.fileno(), t.on_readable)
    del t
    loop.close()
    gc.collect()
    assert ref() is None


def _in_thread_while_the_loop_waits(loop, fn):
    """Runs ``fn`` in another thread while the loop's thread is blocked in its poll (nothing is
    ready and a timer is far off); returns what it returned or raised, once the loop was woken
    (by ``fn``'s reader, or by a thread-safe call after it)."""
    import asyncio
    import threading

    done = loop.create_future()
    out = []

    def work():
        time.sleep(0.05)
        try:
            out.append(("ret", fn(done)))
        except BaseException as e:  # noqa: BLE001 (reported to the test)
            out.append(("exc", e))
        time.sleep(0.05)
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    t = threading.Thread(target=work)
    t.start()
    try:
        loop.run_until_complete(asyncio.wait_for(done, 5))
    finally:
        t.join()
    return out[0]


@pytest.mark.parametrize("debug", [False, True], ids=["normal", "debug"])
def test_add_reader_from_another_thread_while_the_loop_waits(loop, sockpair, debug):
    """asyncio documents add_reader as not thread-safe, but its selector accepts it from any
    thread, the loop's blocking select() included: an fd added ready wakes it."""
    a, b = sockpair
    b.send(b"x")
    loop.set_debug(debug)
    seen = []

    def add(done):
        def ready():
            seen.append(a.recv(1))
            loop.remove_reader(a)
            done.set_result(None)

        return loop.add_reader(a, ready)

    assert _in_thread_while_the_loop_waits(loop, add) == ("ret", None)
    assert seen == [b"x"]


@pytest.mark.parametrize("debug", [False, True], ids=["normal", "debug"])
def test_add_writer_from_another_thread_while_the_loop_waits(loop, sockpair, debug):
    a, _ = sockpair
    loop.set_debug(debug)
    seen = []

    def add(done):
        def ready():
            seen.append("writable")
            loop.remove_writer(a)
            done.set_result(None)

        return loop.add_writer(a, ready)

    assert _in_thread_while_the_loop_waits(loop, add) == ("ret", None)
    assert seen == ["writable"]


@pytest.mark.parametrize("debug", [False, True], ids=["normal", "debug"])
def test_remove_reader_and_writer_from_another_thread_while_the_loop_waits(loop, sockpair, debug):
    import asyncio

    a, b = sockpair  # a: read from, nothing sent to it yet
    c, d = socket.socketpair()  # c: written to, its buffer full (d does not read)
    c.setblocking(False)
    d.setblocking(False)
    try:
        while True:
            c.send(b"x" * 65536)
    except BlockingIOError:
        pass
    loop.set_debug(debug)
    seen = []
    loop.add_reader(a, seen.append, "read")
    loop.add_writer(c, seen.append, "write")

    def remove(done):
        removed = (loop.remove_reader(a), loop.remove_writer(c), loop.remove_reader(a))
        b.send(b"x")  # a readable, and c writable once d is drained: nobody may hear of it
        try:
            while d.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
        return removed

    try:
        assert _in_thread_while_the_loop_waits(loop, remove) == ("ret", (True, True, False))
        loop.run_until_complete(asyncio.sleep(0.02))
    finally:
        c.close()
        d.close()
    assert seen == []
