"""One case's world: a fresh loop of one flavour, the objects a case calls methods on (transports,
servers, handles, futures...), an ordered record of everything observable that happened, and
the teardown that puts the process back as it was (so that many cases can share one child).

Also the resolver guard (``install_guard``) and the normalisation of results and exceptions
into plain data that two processes can compare.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import gc
import ipaddress
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import warnings

from values import Values

# How long a harness wait on an awaitable lasts before it counts as "pending". Anything that
# completes completes in microseconds here (socketpairs, loopback); anything else waits forever.
AWAIT_TIMEOUT = 0.05

FLAVORS = ("asyncio", "ferroloop")


def new_loop(flavor):
    if flavor == "asyncio":
        return asyncio.SelectorEventLoop()
    import ferroloop

    return ferroloop.new_event_loop()


# -- never resolve a name ---------------------------------------------------------------------


def _is_literal(host):
    if isinstance(host, (bytes, bytearray)):
        try:
            host = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return True  # not a name: the call fails on its own
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False


def install_guard():
    """Refuse, with OSError, every lookup of a host that is not an IP literal, in this process.

    An audit hook sees the C-level calls whoever makes them (asyncio, ferroloop, a socket's own
    connect/sendto/bind, which resolve a name in a tuple address), so the fuzzers cannot
    resolve a real name whatever they generate.
    """

    def refuse(what):
        raise socket.gaierror(socket.EAI_NONAME, f"fuzz guard: refused to resolve {what!r}")

    def hook(event, args):
        if not event.startswith("socket."):
            return
        if event == "socket.getaddrinfo":
            if args[0] is not None and not _is_literal(args[0]):
                refuse(args[0])
        elif event in ("socket.gethostbyname", "socket.gethostbyaddr"):
            if not _is_literal(args[0]):
                refuse(args[0])
        elif event == "socket.getnameinfo":
            sockaddr, flags = args
            if not (isinstance(flags, int) and flags & socket.NI_NUMERICHOST):
                refuse(sockaddr)
        elif event in ("socket.connect", "socket.sendto", "socket.bind"):
            address = args[1]
            if (
                isinstance(address, tuple)
                and address
                and isinstance(address[0], (str, bytes))
                and address[0] not in ("", "<broadcast>", b"")
                and not _is_literal(address[0])
            ):
                refuse(address[0])

    sys.addaudithook(hook)


# -- normalisation ----------------------------------------------------------------------------

_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FD = re.compile(r"\bfd=\d+")


def norm_message(msg):
    msg = _HEX.sub("0x?", str(msg))
    msg = _FD.sub("fd=?", msg)
    return msg[:300]


def exc_type(exc):
    name = type(exc).__name__
    if isinstance(exc, OSError) and exc.errno is not None:
        name += f"[{errno.errorcode.get(exc.errno, exc.errno)}]"
    return name


def describe_exc(exc):
    try:
        msg = str(exc)
    except BaseException as e:  # a hostile __str__
        msg = f"<str raised {type(e).__name__}>"
    return ["exc", exc_type(exc), norm_message(msg)]


def kind_of(value, env):
    """The class tag of an object whose identity, not value, is what a method returns."""
    import concurrent.futures

    if env is not None and value is env.loop:
        return "<loop>"
    if isinstance(value, asyncio.AbstractEventLoop):
        return "<other loop>"
    if isinstance(value, asyncio.TimerHandle) or type(value).__name__ == "TimerHandle":
        return "<TimerHandle>"
    if isinstance(value, asyncio.Handle) or type(value).__name__ == "Handle":
        return "<Handle>"
    if isinstance(value, asyncio.Task):
        return "<Task>"
    if asyncio.isfuture(value):
        return "<Future>"
    if isinstance(value, concurrent.futures.Future):
        return "<concurrent Future>"
    if asyncio.iscoroutine(value):
        return "<coroutine>"
    if isinstance(value, socket.socket):
        return "<socket>"
    if isinstance(value, asyncio.AbstractServer):
        return "<Server>"
    if isinstance(value, asyncio.BaseProtocol):
        return "<protocol>"
    if hasattr(value, "get_extra_info") and hasattr(value, "is_closing"):
        return "<transport>"
    if isinstance(value, contextvars.Context):
        return "<Context>"
    return None


def norm(value, env=None, depth=0):
    """Plain data for a returned value: equal for two loops that answered alike."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**64 else "<bigint>"
    if isinstance(value, float):
        if math.isnan(value):
            return "<nan>"
        if math.isinf(value):
            return "<inf>" if value > 0 else "<-inf>"
        return "<float>"
    if isinstance(value, str):
        return ["str", norm_message(value)]
    if isinstance(value, (bytes, bytearray)):
        return [type(value).__name__, len(value), bytes(value[:16]).hex()]
    if isinstance(value, memoryview):
        try:
            return ["memoryview", value.nbytes]
        except ValueError:  # released
            return ["memoryview", "released"]
    tag = kind_of(value, env)
    if tag:
        return tag
    if isinstance(value, BaseException):
        return ["exception", exc_type(value)]
    if (
        isinstance(value, tuple)
        and len(value) in (2, 4)
        and isinstance(value[0], str)
        and type(value[1]) is int
        and 0 < value[1] < 65536
    ):
        # A socket address: its port is the kernel's choice.
        return ["address", value[0], "<port>", *[norm(v) for v in value[2:]]]
    if depth < 3 and isinstance(value, (tuple, list)):
        return [type(value).__name__] + [norm(v, env, depth + 1) for v in value[:20]]
    if depth < 3 and isinstance(value, dict):
        return ["dict", sorted(str(k) for k in value)]
    return ["obj", type(value).__name__]


def loose(data):
    """``data`` without exception messages and strings: what must match whatever the wording."""
    if isinstance(data, list):
        if len(data) == 3 and data[0] == "exc" and isinstance(data[2], str):
            return ["exc", data[1]]
        if len(data) == 2 and data[0] == "str":
            return ["str"]
        if data and data[0] == "log":
            return data[:3]
        return [loose(d) for d in data]
    if isinstance(data, dict):
        return {k: loose(v) for k, v in data.items()}
    return data


# -- fds ------------------------------------------------------------------------------------
# The loops hold different numbers of descriptors (asyncio's: an epoll and a self-pipe;
# ferroloop's: an epoll and an eventfd), so what a case opens next would have other numbers on
# each, in callback arguments and messages alike. Every free number below FD_BASE is taken before a
# case's first value is made: both loops' cases then count from FD_BASE.
FD_BASE = 40


def pad_fds():
    padding = []
    base = FD_BASE + SHIFT[0]
    while True:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if fd >= base:
            os.close(fd)
            return padding
        padding.append(fd)


# How far the worker shifts fd numbers (message stability: a message that names an fd changes).
SHIFT = [0]


def open_fds():
    # listdir's own descriptor is in its answer; it is closed by the time anyone looks.
    return {int(fd) for fd in os.listdir("/proc/self/fd") if os.path.lexists(f"/proc/self/fd/{fd}")}


def fd_kind(fd):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "gone"
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        return target[len("anon_inode:") :]
    return "file"


# -- recording --------------------------------------------------------------------------------


class LogCatcher(logging.Handler):
    """asyncio's logger, as events: level, exception type and the message's first line."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.env = None

    def emit(self, record):
        if self.env is None:
            return
        if record.levelno < logging.WARNING:
            return  # debug mode's chatter ("poll took...") is timing
        exc = record.exc_info[1] if record.exc_info else None
        try:
            first = record.getMessage().split("\n", 1)[0]
        except Exception as e:  # a hostile repr in the arguments
            first = f"<message raised {type(e).__name__}>"
        self.env.raw_event(
            "log", record.levelname, exc_type(exc) if exc else None, norm_message(_stem(first))
        )


def _stem(message):
    # What a loop says, without the reprs it quotes (handles and transports print differently
    # between the loops: that is in the documented differences, not worth a case each).
    return re.split(r"[<(\[]", message, maxsplit=1)[0].strip()


LOG = LogCatcher()


def install_recording():
    logger = logging.getLogger("asyncio")
    logger.addHandler(LOG)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    sys.unraisablehook = _unraisable


def _unraisable(unraisable):
    env = Env.current
    exc = unraisable.exc_value
    if env is not None:
        env.unraisable.append(exc_type(exc) if exc is not None else "None")
    else:
        # Between cases (a collection, a thread ending): said in full, a panic included.
        import traceback

        try:
            what = repr(unraisable.object)
        except Exception:
            what = "<object whose repr raised>"
        sys.stderr.write(f"unraisable outside a case: {unraisable.err_msg} {what}\n")
        traceback.print_exception(
            unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback, file=sys.stderr
        )


class _Recording:
    """Protocol callbacks that record themselves and can run a case's call from inside."""

    def __init__(self, env, name, evil=None):
        self.env = env
        self.name = name
        self.evil = evil
        self.buf = bytearray(64 * 1024)
        self.transport = None

    def _at(self, point, *args):
        self.env.event(self.name, point, *args)
        self.env.at_point(point, self)

    def connection_made(self, transport):
        self.transport = transport
        self.env.made_transport(self.name, transport)
        if hasattr(transport, "get_returncode"):
            self.env.subprocesses.append(transport)
        self._at("connection_made")
        if self.evil == "made_raises":
            raise ValueError("connection_made")
        if self.evil == "made_closes":
            transport.close()

    def data_received(self, data):
        self._at("data_received", len(data))
        if self.evil == "data_raises":
            raise ValueError("data_received")

    def eof_received(self):
        self._at("eof_received")
        if self.evil == "eof_true":
            return True
        return None

    def connection_lost(self, exc):
        self._at("connection_lost", exc_type(exc) if exc else None)

    def pause_writing(self):
        self._at("pause_writing")

    def resume_writing(self):
        self._at("resume_writing")

    def __repr__(self):
        return f"<Proto {self.name}>"


class Proto(_Recording, asyncio.Protocol):
    pass


class BufProto(_Recording, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint):
        self._at("get_buffer")
        evil = self.evil
        if evil == "gb_empty":
            return bytearray()
        if evil == "gb_bytes":
            return b"read-only"
        if evil == "gb_raises":
            raise ValueError("get_buffer")
        if evil == "gb_object":
            return object()
        if evil == "gb_huge":
            return bytearray(8 * 1024 * 1024)
        if evil == "gb_released":
            m = memoryview(bytearray(16))
            m.release()
            return m
        return self.buf

    def buffer_updated(self, nbytes):
        self._at("buffer_updated", nbytes)
        if self.evil == "bu_raises":
            raise ValueError("buffer_updated")


class DgramProto(_Recording, asyncio.DatagramProtocol):
    def datagram_received(self, data, addr):
        self._at("datagram_received", len(data))

    def error_received(self, exc):
        self._at("error_received", exc_type(exc))


def make_proto(env, name, buffered=False, datagram=False, evil=None):
    cls = DgramProto if datagram else BufProto if buffered else Proto
    return cls(env, name, evil)


class CaseTimeout(KeyboardInterrupt):
    """Raised by the per-case alarm: the case blocked in Python code. A KeyboardInterrupt, so
    that the loops let it out of the callback it interrupts (they log other exceptions and go
    on, and the case would block again)."""


class Env:
    """The world of one case (see the module doc)."""

    current = None

    def __init__(self, flavor, tmpdir, debug=False, pad=True):
        self.flavor = flavor
        self.tmpdir = tmpdir
        self.events = []
        self.unraisable = []
        self.keep_objects = []
        self.keep_fds = []
        self.loops = []
        self.handles = []
        self.coroutines = []
        self.executors = []
        self.threads = []
        self.fixtures = {}
        self.peers = {}
        self.builtin_sink = []
        self.point = None  # (name, function): a call to run from inside a protocol callback
        self.subprocesses = []  # subprocess transports: settle waits for their exit
        self.timed_out = False
        self.outer_ctx = contextvars.copy_context()
        self.values = Values(self)
        self.loop = self.new_loop()
        self.padding = pad_fds() if pad else []
        # The case says whether debug mode is on (under -X dev loops would start with it on).
        self.loop.set_debug(debug)
        # A slow callback is timing, not behaviour: the noisy machine would decide it.
        self.loop.slow_callback_duration = 1e9
        Env.current = self
        LOG.env = self

    # -- recording
    def event(self, tag, *what):
        self._append([tag] + [norm(w, self) for w in what])

    def raw_event(self, *what):
        self._append(list(what))

    def _append(self, event):
        # A watcher of an always-ready fd runs once per iteration, and how many iterations fit
        # in the settling time is the machine's business: events that repeat (a run of one
        # event, or of a pair such as a failing callback and its log record) count once.
        events = self.events
        events.append(event)
        for k in (1, 2, 3):
            if len(events) >= 2 * k and events[-k:] == events[-2 * k : -k]:
                del events[-k:]
                break

    def callback(self, name, raises=None, then=None):
        env = self

        def callback(*args):
            env.event(name, *args)
            if then is not None:
                then()
            if raises is not None:
                raise raises

        callback.__name__ = callback.__qualname__ = name
        return callback

    def recorder_method(self, *args):
        self.event("cb_method", *args)

    def coroutine(self, coro):
        self.coroutines.append(coro)
        return coro

    # -- resources
    def keep(self, *objs):
        self.keep_objects.extend(objs)

    def keep_fd(self, *fds):
        self.keep_fds.extend(fds)

    def new_loop(self):
        lp = new_loop(self.flavor)
        lp.slow_callback_duration = 1e9
        self.loops.append(lp)
        return lp

    def other_loop(self):
        if "other_loop" not in self.fixtures:
            self.fixtures["other_loop"] = self.new_loop()
        return self.fixtures["other_loop"]

    def _socketpair(self):
        if "sp" not in self.fixtures:
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            self.keep(a, b)
            self.fixtures["sp"] = (a, b)
        return self.fixtures["sp"]

    def sock(self):
        return self._socketpair()[0]

    def peer(self):
        return self._socketpair()[1]

    def listener(self):
        if "listener" not in self.fixtures:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            s.setblocking(False)
            self.keep(s)
            self.fixtures["listener"] = s
        return self.fixtures["listener"]

    def udp_sock(self):
        if "udp_sock" not in self.fixtures:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self.keep(s)
            self.fixtures["udp_sock"] = s
        return self.fixtures["udp_sock"]

    def protocol_factory(self, buffered=False, datagram=False, evil=None):
        env = self
        count = [0]

        def factory():
            count[0] += 1
            return make_proto(env, f"p{count[0]}", buffered=buffered, datagram=datagram, evil=evil)

        return factory

    def made_transport(self, name, transport):
        self.fixtures.setdefault("made:" + name, transport)

    def at_point(self, point, proto):
        if self.point is not None and self.point[0] == point and proto.name == "hk":
            fn = self.point[1]
            self.point = None
            fn()

    # -- running the loop from the harness
    def run(self, aw, timeout=AWAIT_TIMEOUT):
        """Await ``aw`` on the loop, bounded: ("ret", v) / ("exc", e) / ("pending",).

        A task still pending after ``timeout`` is left alone, not cancelled: wait_for would
        wait for the cancellation to finish, which a hostile task may never do.
        """
        loop = self.loop
        fut = asyncio.ensure_future(aw, loop=loop)

        async def bounded():
            await asyncio.wait({fut}, timeout=timeout)

        self.outer_ctx.run(loop.run_until_complete, bounded())
        if not fut.done():
            return ["pending"]
        return ["ret", fut.result()]

    def settle(self):
        """Let what the call scheduled happen: a few iterations, a short wait, a few more."""
        if self.loop.is_closed() or self.loop.is_running():
            return

        async def settle():
            for _ in range(6):
                await asyncio.sleep(0)
            await asyncio.sleep(0.002)
            # A child's exit and its pipes' EOF come when the child is done, which on a busy
            # machine may take a while: wait for them, bounded.
            for _ in range(400):
                if all(t.get_returncode() is not None for t in self.subprocesses):
                    break
                await asyncio.sleep(0.005)
            for _ in range(6):
                await asyncio.sleep(0)

        try:
            self.outer_ctx.run(self.loop.run_until_complete, settle())
        except CaseTimeout:
            raise
        except BaseException as e:
            self.event("settle", describe_exc(e))

    # -- the objects a case's methods are called on
    def fixture(self, name):
        if name in self.fixtures:
            return self.fixtures[name]
        value = getattr(self, "_fx_" + name)()
        self.fixtures[name] = value
        return value

    def _fx_loop(self):
        return self.loop

    def _fx_handle(self):
        h = self.loop.call_soon(self.values("cb"), "fx")
        self.handles.append(h)
        return h

    def _fx_timer(self):
        h = self.loop.call_later(3600, self.values("cb"), "fx")
        self.handles.append(h)
        return h

    def _fx_future(self):
        return self.loop.create_future()

    def _fx_task(self):
        return self.loop.create_task(self.coroutine(asyncio.sleep(3600)))

    def _connect(self, sock, buffered=False, name="fx"):
        proto = make_proto(self, name, buffered=buffered)
        self.keep(sock)
        result = self.run(self.loop.connect_accepted_socket(lambda: proto, sock), timeout=5)
        if result[0] != "ret":
            raise RuntimeError(f"fixture transport: {result}")
        return result[1][0]

    def hook_transport(self, buffered):
        """A transport whose protocol ("hk") runs the case's calls at the case's point."""
        a, b = socket.socketpair()
        b.setblocking(False)
        self.keep(b)
        self.peers["hk"] = b
        self.fixtures["hook"] = self._connect(a, buffered, name="hk")
        return self.fixtures["hook"]

    def _fx_tr_unix(self, buffered=False):
        a, b = socket.socketpair()
        b.setblocking(False)
        self.keep(b)
        self.peers["tr"] = b
        return self._connect(a, buffered)

    def _fx_tr_unix_buffered(self):
        return self._fx_tr_unix(buffered=True)

    def _fx_tr_tcp(self):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        client = socket.create_connection(lsock.getsockname())
        server_side, _ = lsock.accept()
        lsock.close()
        server_side.setblocking(False)
        self.keep(server_side)
        self.peers["tr"] = server_side
        return self._connect(client)

    def _fx_server(self):
        result = self.run(
            self.loop.create_server(self.protocol_factory(), "127.0.0.1", 0), timeout=5
        )
        if result[0] != "ret":
            raise RuntimeError(f"fixture server: {result}")
        return result[1]

    def _fx_udp(self):
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        self.keep(peer)
        self.peers["udp"] = peer
        result = self.run(
            self.loop.create_datagram_endpoint(
                lambda: make_proto(self, "fx", datagram=True), remote_addr=peer.getsockname()
            ),
            timeout=5,
        )
        if result[0] != "ret":
            raise RuntimeError(f"fixture udp: {result}")
        return result[1][0]

    def _fx_rpipe(self):
        r, w = os.pipe()
        self.peers["pipe_w"] = w
        self.keep_fd(w)
        f = open(r, "rb", buffering=0)  # noqa: SIM115
        self.keep(f)
        result = self.run(self.loop.connect_read_pipe(lambda: make_proto(self, "fx"), f), timeout=5)
        if result[0] != "ret":
            raise RuntimeError(f"fixture read pipe: {result}")
        return result[1][0]

    def _fx_wpipe(self):
        r, w = os.pipe()
        os.set_blocking(r, False)
        self.peers["pipe_r"] = r
        self.keep_fd(r)
        f = open(w, "wb", buffering=0)  # noqa: SIM115
        self.keep(f)
        result = self.run(
            self.loop.connect_write_pipe(lambda: make_proto(self, "fx"), f), timeout=5
        )
        if result[0] != "ret":
            raise RuntimeError(f"fixture write pipe: {result}")
        return result[1][0]

    # -- after the call
    def drain_peers(self):
        """What reached each peer: bytes (and EOF) on the other end of the fixture transports."""
        for name, peer in sorted(self.peers.items()):
            total, eof = 0, False
            try:
                while True:
                    if isinstance(peer, int):
                        data = os.read(peer, 1 << 20)
                    else:
                        data = peer.recv(1 << 20)
                    if not data:
                        eof = True
                        break
                    total += len(data)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                self.event("peer", name, exc_type(e))
                continue
            self.event("peer", name, total, eof)

    def teardown(self):
        """Close everything and restore the process, step by step: a step that fails (a
        coroutine still running refuses close()...) is recorded and the others still run."""
        errors = []

        def step(fn, *args):
            try:
                fn(*args)
            except CaseTimeout:
                raise
            except BaseException as e:
                errors.append(describe_exc(e))

        try:
            self._teardown(step)
        finally:
            # Whatever happened, nothing global may keep this case's world alive.
            LOG.env = None
            Env.current = None
        if errors:
            self.event("teardown", errors[:3])

    def _teardown(self, step):
        loop = self.loop
        for tr in list(self.fixtures.values()):
            if hasattr(tr, "abort") and hasattr(tr, "is_closing"):
                step(tr.abort)
            elif hasattr(tr, "close") and hasattr(tr, "sockets"):
                step(tr.close)
        if not loop.is_closed() and not loop.is_running() and not self.timed_out:
            # Not after the alarm: what blocked the case would run, and block, again.
            step(self.outer_ctx.run, loop.run_until_complete, asyncio.sleep(0))
        for t in self.threads:
            t.join(5)
        for lp in self.loops:
            if not lp.is_closed() and not lp.is_running():
                try:
                    if lp.get_debug():
                        lp.set_debug(False)
                    lp.close()
                except CaseTimeout:
                    raise
                except BaseException as e:
                    self.event("close", describe_exc(e))
        for ex in self.executors:
            step(ex.shutdown, True)
        for coro in self.coroutines:
            step(coro.close)
        for obj in self.keep_objects:
            step(obj.close)
        for fd in self.keep_fds + self.padding:
            step(os.close, fd)
        asyncio.set_event_loop(None)
        sys.set_asyncgen_hooks(None, None)
        sys.set_coroutine_origin_tracking_depth(0)
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        step(signal.set_wakeup_fd, -1)
        self.fixtures.clear()
        self.values = None
        self.handles = self.loops = self.keep_objects = None
        self.loop = None
        loop = None
        gc.collect()
        gc.collect()


def in_thread(env, fn):
    """Run ``fn`` on another thread; returns its outcome once it is done (or "hung")."""
    box = []

    def target():
        try:
            box.append(["ret", fn()])
        except BaseException as e:
            box.append(["raised", e])

    t = threading.Thread(target=target, daemon=True)
    env.threads.append(t)
    t.start()
    return t, box


def record_warnings():
    """A catch_warnings that records every warning, unless -W options say otherwise."""
    cm = warnings.catch_warnings(record=True)
    caught = cm.__enter__()
    if not sys.warnoptions:
        warnings.simplefilter("always")
    return cm, caught
