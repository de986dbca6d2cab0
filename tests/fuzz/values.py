"""Hostile values, by name, for both fuzzers.

A value is named by a short string (its *spec*, e.g. ``"Idx(raise)"``, ``"fd_reused"``) so that a
case is plain data: the parent process generates and prints it, the child processes build the
objects. ``make(spec, env)`` builds one; ``env`` is the case's ``fixtures.Env`` (the loop, sockets,
the event recorder), since many values only mean something next to a loop.

Every string that can reach a resolver (a host, an address tuple, a shell command, a path) is
safe by construction: hosts are IP literals, commands are harmless, paths are relative to the
worker's private temporary directory. ``guard.install()`` refuses any other name at run time.
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import contextvars
import fractions
import functools
import os
import signal
import socket
import sys
from decimal import Decimal

# -- objects whose dunders raise or lie -------------------------------------------------------


class Boom(Exception):
    """What the evil dunders raise: a type no loop raises by itself."""


class Idx:
    """An int-like through __index__ only."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def __repr__(self):
        return f"Idx({self.value!r})"


class IntOnly:
    def __int__(self):
        return 1

    def __repr__(self):
        return "IntOnly()"


class Flt:
    """A float-like through __float__ only."""

    def __init__(self, value):
        self.value = value

    def __float__(self):
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def __repr__(self):
        return f"Flt({self.value!r})"


class BoolRaises:
    def __bool__(self):
        raise Boom("__bool__")

    def __repr__(self):
        return "BoolRaises()"


class BoolLies:
    """True, then False, then True..."""

    def __init__(self):
        self.n = 0

    def __bool__(self):
        self.n += 1
        return self.n % 2 == 1

    def __repr__(self):
        return "BoolLies()"


class Len:
    def __init__(self, value):
        self.value = value

    def __len__(self):
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def __repr__(self):
        return f"Len({self.value!r})"


class HashRaises:
    def __hash__(self):
        raise Boom("__hash__")

    def __eq__(self, other):
        raise Boom("__eq__")

    def __repr__(self):
        return "HashRaises()"


class LyingBytes(bytes):
    """A bytes whose len() is not its size (C code sees the size, Python code the lie)."""

    def __new__(cls, data, lie):
        self = super().__new__(cls, data)
        self.lie = lie
        return self

    def __len__(self):
        return self.lie

    def __repr__(self):
        return f"LyingBytes({bytes(self)!r}, {self.lie})"


class Fileno:
    """An object whose fileno() returns (or raises) what it is given; a list cycles."""

    def __init__(self, value):
        self.values = value if isinstance(value, list) else [value]
        self.calls = 0

    def fileno(self):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        if isinstance(value, BaseException):
            raise value
        return value

    def __repr__(self):
        return "Fileno()"


class ReprRaises:
    def __repr__(self):
        raise Boom("__repr__")


class GetattrRaises:
    def __getattr__(self, name):
        raise Boom(f"getattr {name}")

    def __repr__(self):
        return "GetattrRaises()"


# -- the value table --------------------------------------------------------------------------

NUMBERS = [
    "0", "1", "-1", "2**31-1", "2**31", "2**32", "2**63", "-2**63", "2**64", "10**400",
    "-10**400", "0.0", "-0.0", "1e-9", "-1e-9", "1e308", "nan", "inf", "-inf", "True", "False",
    "1j", "Decimal(1)", "Decimal('nan')", "Fraction(1,3)",
]  # fmt: skip
EVIL_NUMBERS = [
    "Idx(1)", "Idx(raise)", "Idx(2**64)", "Idx(-1)", "Idx('3')", "IntOnly()", "Flt(raise)",
    "Flt(nan)", "Flt('x')", "Flt(1e-9)",
]  # fmt: skip
EVIL_OBJECTS = [
    "BoolRaises()", "BoolLies()", "Len(raise)", "Len(-1)", "Len(2**63)", "HashRaises()",
    "ReprRaises()", "GetattrRaises()",
]  # fmt: skip
STRINGS = ["''", "'3'", "'x'", "'\\x00'", "'é'", "'127.0.0.1'", "'::1'", "'x'*5000"]
BYTES = [
    "b''", "b'x'", "b'x'*65536", "b'x'*(1<<21)", "bytearray(b'xy')", "bytearray()",
    "memoryview(b'xyz')", "mv_released", "mv_strided", "mv_doubles", "array_i", "LyingBytes(0)",
    "LyingBytes(99)", "bytes(16)",
]  # fmt: skip
CONTAINERS = [
    "None", "[]", "[b'a', b'b']", "[b'a', 1]", "(b'a',)", "{}", "set()", "object()", "int",
    "gen", "Ellipsis",
]  # fmt: skip
CALLBACKS = [
    "cb", "cb_raise", "cb_base", "cb_stop", "cb_close", "cb_reenter", "cb_soon", "partial_cb",
    "cb_class", "cb_method", "cb_builtin", "cb_noargs", "cb_cancel_all",
]  # fmt: skip
COROUTINES = ["coro", "coro_raise", "coro_forever", "coro_fn", "agen"]
FUTURES = ["fut", "fut_done", "fut_exc", "fut_cancelled", "fut_other_loop", "task", "cfut"]
LOOPS = ["the_loop", "other_loop", "closed_loop"]
CONTEXTS = ["ctx", "ctx_entered"]
FDS = [
    "fd_sock", "fd_peer", "fd_closed", "fd_reused", "fd_file", "fd_pipe_r", "fd_pipe_w",
    "fd_devnull", "fd_eventfd", "fd_epoll", "fd_listen", "fd_udp",
]  # fmt: skip
SOCKETS = [
    "sock", "sock_peer", "sock_closed", "sock_blocking", "sock_listen", "sock_udp",
    "sock_tcp_fresh", "sock_tcp_client", "sock_unix_dgram", "sock_detached",
]  # fmt: skip
FILENOS = [
    "Fileno(raise)", "Fileno(raiseV)", "Fileno('3')", "Fileno(-1)", "Fileno(2**31)",
    "Fileno(3.7)", "Fileno(sock)", "Fileno(closed)", "Fileno(lie)", "Fileno(Idx(sock))",
    "Fileno(True)", "file_obj",
]  # fmt: skip
ADDRESSES = [
    "addr_listen", "('127.0.0.1', 0)", "('::1', 0, 0, 0)", "('127.0.0.1', -1)",
    "('127.0.0.1', 65536)", "('127.0.0.1',)", "('127.0.0.1', 'x')", "('127.0.0.1', Idx(1))",
    "('127.0.0.1', 0, 0)", "addr_udp", "addr_closed_port", "unix_path", "unix_path_long",
    "unix_abstract",
]  # fmt: skip
PROTOCOLS = [
    "proto", "proto_buffered", "proto_dgram", "pf_raise", "pf_none", "pf_object",
    "proto_made_raises", "proto_made_closes", "proto_gb_empty", "proto_gb_bytes",
    "proto_gb_raises", "proto_gb_object", "proto_gb_huge", "proto_gb_released", "proto_bu_raises",
    "proto_data_raises", "proto_eof_true",
]  # fmt: skip
EXCEPTIONS = [
    "ValueError()", "ValueError", "StopIteration()", "KeyboardInterrupt()", "SystemExit()",
    "CancelledError()", "GeneratorExit()", "BaseException()",
]  # fmt: skip
HANDLERS = ["handler", "handler_raise"]
EH_CONTEXTS = [
    "{'message': 'm'}", "{'message': 'm', 'exception': ValueError('e')}", "{'exception': 3}",
    "{'message': 3}", "{'message': 'm', 'source_traceback': 3}", "{'message': 'm', 'handle': 3}",
    "{'message': 'm', 'future': fut}", "{'message': 'm', 'exception': Boom()}",
]  # fmt: skip
SIGNALS = ["SIGUSR1", "SIGUSR2", "SIGKILL", "SIGINT", "0", "65", "-1"]
EXECUTORS = ["executor", "executor_shut", "pexecutor_fake"]
SSL = ["ssl_client", "ssl_server", "True"]
MISC = ["the_transport", "the_server", "str_io"]

ALL = sorted(
    set(
        NUMBERS + EVIL_NUMBERS + EVIL_OBJECTS + STRINGS + BYTES + CONTAINERS + CALLBACKS
        + COROUTINES + FUTURES + LOOPS + CONTEXTS + FDS + SOCKETS + FILENOS + ADDRESSES
        + PROTOCOLS + EXCEPTIONS + HANDLERS + EH_CONTEXTS + EXECUTORS + SSL + MISC
    )
)  # fmt: skip

# Callables among the values, for the non-callable check (known.py).
CALLABLE_SPECS = set(CALLBACKS) | {
    "coro_fn", "int", "pf_raise", "pf_none", "pf_object", "handler", "handler_raise",
    "ValueError",
} | {p for p in PROTOCOLS if p.startswith("proto")}  # fmt: skip


def _literal(spec):
    """Values spelled as Python literals or tiny expressions over the classes above."""
    names = {
        "Idx": Idx,
        "IntOnly": IntOnly,
        "Flt": Flt,
        "BoolRaises": BoolRaises,
        "BoolLies": BoolLies,
        "Len": Len,
        "HashRaises": HashRaises,
        "ReprRaises": ReprRaises,
        "GetattrRaises": GetattrRaises,
        "Boom": Boom,
        "Decimal": Decimal,
        "Fraction": fractions.Fraction,
        "nan": float("nan"),
        "inf": float("inf"),
        "raise": Boom("dunder"),
        "CancelledError": asyncio.CancelledError,
        "__builtins__": {
            "ValueError": ValueError,
            "StopIteration": StopIteration,
            "KeyboardInterrupt": KeyboardInterrupt,
            "SystemExit": SystemExit,
            "GeneratorExit": GeneratorExit,
            "BaseException": BaseException,
            "bytearray": bytearray,
            "memoryview": memoryview,
            "bytes": bytes,
            "object": object,
            "set": set,
            "int": int,
            "None": None,
            "Ellipsis": Ellipsis,
            "True": True,
            "False": False,
        },
    }
    return eval(spec, names)  # the specs are this module's own constants


class Values:
    """Builds the named values of one case, each once (the same spec is the same object)."""

    def __init__(self, env):
        self.env = env
        self.made = {}

    def __call__(self, spec):
        if spec not in self.made:
            self.made[spec] = self._make(spec)
        return self.made[spec]

    def _make(self, spec):
        env = self.env
        maker = getattr(self, "v_" + spec, None) if spec.isidentifier() else None
        if maker is not None:
            return maker()
        if spec.startswith("Fileno("):
            return self._fileno(spec[7:-1])
        if spec.startswith("LyingBytes("):
            return LyingBytes(b"abc", int(spec[11:-1]))
        if spec.startswith("{") and "fut" in spec:
            return {"message": "m", "future": self("fut")}
        if spec in SIGNALS and not spec.lstrip("-").isdigit():
            return getattr(signal, spec)
        if spec == "now+3600":
            return env.loop.time() + 3600
        del env
        return _literal(spec)

    # fds and sockets: made on first use, closed at teardown by the env
    def _fileno(self, arg):
        env = self.env
        table = {
            "raise": lambda: OSError("fileno boom"),
            "raiseV": lambda: ValueError("fileno bad"),
            "sock": lambda: env.sock().fileno(),
            "closed": lambda: self("fd_closed"),
            "lie": lambda: [env.sock().fileno(), self("fd_closed")],
            "Idx(sock)": lambda: Idx(env.sock().fileno()),
        }
        if arg in table:
            return Fileno(table[arg]())
        return Fileno(_literal(arg))

    def v_fd_sock(self):
        return self.env.sock().fileno()

    def v_fd_peer(self):
        return self.env.peer().fileno()

    def v_sock(self):
        return self.env.sock()

    def v_sock_peer(self):
        return self.env.peer()

    def v_fd_closed(self):
        a, b = socket.socketpair()
        fd = a.fileno()
        a.close()
        b.close()
        return fd

    def v_fd_reused(self):
        # A number whose socket was closed and which a new socket (held by the env) now has.
        a, b = socket.socketpair()
        fd = a.fileno()
        a.close()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.env.keep(b, c)
        if c.fileno() != fd:
            return c.fileno()
        return fd

    def v_sock_closed(self):
        s = socket.socket()
        s.close()
        return s

    def v_sock_detached(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.env.keep_fd(s.detach())
        return s

    def v_sock_blocking(self):
        a, b = socket.socketpair()
        self.env.keep(a, b)
        return a

    def v_fd_file(self):
        f = open(os.path.join(self.env.tmpdir, "regular"), "w+b")  # noqa: SIM115
        f.write(b"0123456789" * 100)
        f.flush()
        f.seek(0)
        self.env.keep(f)
        return f.fileno()

    def v_file_obj(self):
        f = open(os.path.join(self.env.tmpdir, "regular2"), "w+b")  # noqa: SIM115
        f.write(b"abcdefghij" * 100)
        f.flush()
        f.seek(0)
        self.env.keep(f)
        return f

    def _pipe(self):
        if "pipe" not in self.made:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self.env.keep_fd(r, w)
            self.made["pipe"] = (r, w)
        return self.made["pipe"]

    def v_fd_pipe_r(self):
        return self._pipe()[0]

    def v_fd_pipe_w(self):
        return self._pipe()[1]

    def v_pipe_r_file(self):
        r, w = os.pipe()
        self.env.keep_fd(w)
        f = open(r, "rb", buffering=0)  # noqa: SIM115
        self.env.keep(f)
        return f

    def v_pipe_w_file(self):
        r, w = os.pipe()
        self.env.keep_fd(r)
        f = open(w, "wb", buffering=0)  # noqa: SIM115
        self.env.keep(f)
        return f

    def v_fd_devnull(self):
        fd = os.open(os.devnull, os.O_RDWR)
        self.env.keep_fd(fd)
        return fd

    def v_fd_eventfd(self):
        fd = os.eventfd(0, os.EFD_NONBLOCK)
        self.env.keep_fd(fd)
        return fd

    def v_fd_epoll(self):
        import select

        ep = select.epoll()
        self.env.keep(ep)
        return ep.fileno()

    def v_sock_listen(self):
        return self.env.listener()

    def v_fd_listen(self):
        return self.env.listener().fileno()

    def v_sock_udp(self):
        return self.env.udp_sock()

    def v_fd_udp(self):
        return self.env.udp_sock().fileno()

    def v_sock_tcp_fresh(self):
        s = socket.socket()
        s.setblocking(False)
        self.env.keep(s)
        return s

    def v_sock_tcp_client(self):
        s = socket.create_connection(self.env.listener().getsockname())
        s.setblocking(False)
        self.env.keep(s)
        return s

    def v_sock_unix_dgram(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.setblocking(False)
        self.env.keep(a, b)
        return a

    # addresses: only literals and paths in the private directory
    def v_addr_listen(self):
        return self.env.listener().getsockname()

    def v_addr_udp(self):
        return self.env.udp_sock().getsockname()

    def v_addr_closed_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        addr = s.getsockname()
        s.close()
        return addr

    def v_unix_path(self):
        return os.path.join(self.env.tmpdir, "u.sock")

    def v_unix_path_long(self):
        return os.path.join(self.env.tmpdir, "x" * 200)

    def v_unix_abstract(self):
        return b"\0ferroloop-fuzz-" + str(os.getpid()).encode()

    # buffers
    def v_mv_released(self):
        m = memoryview(bytearray(b"released"))
        m.release()
        return m

    def v_mv_strided(self):
        return memoryview(bytearray(b"abcdefgh"))[::2]

    def v_mv_doubles(self):
        return memoryview(array.array("d", [1.0, 2.0]))

    def v_array_i(self):
        return array.array("i", [1, 2, 3])

    def v_gen(self):
        return (b"g" for _ in range(2))

    # callables: each records its call in the env's event list
    def v_cb(self):
        return self.env.callback("cb")

    def v_cb_raise(self):
        return self.env.callback("cb_raise", raises=ValueError("cb"))

    def v_cb_base(self):
        return self.env.callback("cb_base", raises=KeyboardInterrupt())

    def v_cb_stop(self):
        return self.env.callback("cb_stop", then=lambda: self.env.loop.stop())

    def v_cb_close(self):
        return self.env.callback("cb_close", then=lambda: self.env.loop.close())

    def v_cb_reenter(self):
        env = self.env
        return env.callback(
            "cb_reenter", then=lambda: env.loop.run_until_complete(asyncio.sleep(0))
        )

    def v_cb_soon(self):
        env = self.env
        return env.callback("cb_soon", then=lambda: env.loop.call_soon(self("cb"), "again"))

    def v_cb_cancel_all(self):
        env = self.env

        def cancel_all():
            for h in env.handles:
                h.cancel()

        return env.callback("cb_cancel_all", then=cancel_all)

    def v_partial_cb(self):
        return functools.partial(self("cb"), "partial")

    def v_cb_class(self):
        env = self.env

        class Rec:
            def __init__(self, *args):
                env.event("cb_class", *args)

        return Rec

    def v_cb_method(self):
        return self.env.recorder_method

    def v_cb_builtin(self):
        return self.env.builtin_sink.append

    def v_cb_noargs(self):
        env = self.env

        def noargs():
            env.event("cb_noargs")

        return noargs

    def v_coro_fn(self):
        async def coro_fn(*args):
            return 1

        return coro_fn

    def v_coro(self):
        return self.env.coroutine(asyncio.sleep(0, "result"))

    def v_coro_raise(self):
        async def failing():
            raise ValueError("coro")

        return self.env.coroutine(failing())

    def v_coro_forever(self):
        async def forever():
            await asyncio.sleep(3600)

        return self.env.coroutine(forever())

    def v_agen(self):
        async def agen():
            yield 1

        return agen()

    # futures
    def v_fut(self):
        return self.env.loop.create_future()

    def v_fut_done(self):
        f = self.env.loop.create_future()
        f.set_result("done")
        return f

    def v_fut_exc(self):
        f = self.env.loop.create_future()
        f.set_exception(ValueError("fut"))
        f.exception()  # retrieved: no "never retrieved" log on either loop
        return f

    def v_fut_cancelled(self):
        f = self.env.loop.create_future()
        f.cancel()
        return f

    def v_fut_other_loop(self):
        return self.env.other_loop().create_future()

    def v_task(self):
        return self.env.loop.create_task(self.env.coroutine(asyncio.sleep(3600)))

    def v_cfut(self):
        return concurrent.futures.Future()

    # loops
    def v_the_loop(self):
        return self.env.loop

    def v_other_loop(self):
        return self.env.other_loop()

    def v_closed_loop(self):
        lp = self.env.new_loop()
        lp.close()
        return lp

    # contexts
    def v_ctx(self):
        return contextvars.copy_context()

    def v_ctx_entered(self):
        # The context every harness run of the loop is entered in: a handle that runs in it
        # finds it entered already.
        return self.env.outer_ctx

    # protocols and factories
    def v_proto(self):
        return self.env.protocol_factory()

    def v_proto_buffered(self):
        return self.env.protocol_factory(buffered=True)

    def v_proto_dgram(self):
        return self.env.protocol_factory(datagram=True)

    def v_pf_raise(self):
        def pf_raise():
            raise ValueError("factory")

        return pf_raise

    def v_pf_none(self):
        return lambda: None

    def v_pf_object(self):
        return object

    def v_proto_made_raises(self):
        return self.env.protocol_factory(evil="made_raises")

    def v_proto_made_closes(self):
        return self.env.protocol_factory(evil="made_closes")

    def v_proto_gb_empty(self):
        return self.env.protocol_factory(buffered=True, evil="gb_empty")

    def v_proto_gb_bytes(self):
        return self.env.protocol_factory(buffered=True, evil="gb_bytes")

    def v_proto_gb_raises(self):
        return self.env.protocol_factory(buffered=True, evil="gb_raises")

    def v_proto_gb_object(self):
        return self.env.protocol_factory(buffered=True, evil="gb_object")

    def v_proto_gb_huge(self):
        return self.env.protocol_factory(buffered=True, evil="gb_huge")

    def v_proto_gb_released(self):
        return self.env.protocol_factory(buffered=True, evil="gb_released")

    def v_proto_bu_raises(self):
        return self.env.protocol_factory(buffered=True, evil="bu_raises")

    def v_proto_data_raises(self):
        return self.env.protocol_factory(evil="data_raises")

    def v_proto_eof_true(self):
        return self.env.protocol_factory(evil="eof_true")

    # handlers
    def v_handler(self):
        env = self.env

        def handler(loop, context):
            exc = context.get("exception")
            env.event("handler", context.get("message"), type(exc).__name__ if exc else None)

        return handler

    def v_handler_raise(self):
        env = self.env

        def handler_raise(loop, context):
            env.event("handler_raise")
            raise ValueError("handler")

        return handler_raise

    # executors
    def v_executor(self):
        ex = concurrent.futures.ThreadPoolExecutor(1)
        self.env.executors.append(ex)
        return ex

    def v_executor_shut(self):
        ex = concurrent.futures.ThreadPoolExecutor(1)
        ex.shutdown()
        return ex

    def v_pexecutor_fake(self):
        class FakeExecutor(concurrent.futures.Executor):
            def submit(self, fn, *args, **kwargs):
                raise ValueError("fake executor")

        return FakeExecutor()

    # TLS contexts (the stdlib test suite's certificate, when it is installed)
    def v_ssl_client(self):
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def v_ssl_server(self):
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert = keycert_path()
        if cert:
            ctx.load_cert_chain(cert)
        return ctx

    def v_now(self):
        return self.env.loop.time()

    def v_proto_instance(self):
        return self.env.protocol_factory()()

    def v_task_factory(self):
        env = self.env

        def task_factory(loop, coro, **kwargs):
            env.event("task_factory", sorted(kwargs))
            return asyncio.Task(coro, loop=loop, **kwargs)

        return task_factory

    def v_timer_other(self):
        h = self.env.loop.call_later(1800, self("cb"), "other")
        self.env.handles.append(h)
        return h

    def v_the_handle(self):
        return self.env.fixture("handle")

    def v_the_transport(self):
        return self.env.fixture("tr_unix")

    def v_the_server(self):
        return self.env.fixture("server")

    def v_str_io(self):
        import io

        return io.StringIO()


def keycert_path():
    """The stdlib test suite's self-signed key and certificate, or None."""
    try:
        import test
    except ImportError:
        return None
    base = os.path.dirname(test.__file__)
    for path in (
        os.path.join(base, "certdata", "keycert.pem"),
        os.path.join(base, "keycert.pem"),
    ):
        if os.path.exists(path):
            return path
    return None


def is_noncallable(spec):
    """Whether the value named ``spec`` is certainly not callable (a known-difference test)."""
    if spec in CALLABLE_SPECS:
        return False
    return spec not in ("cb_builtin",)


PY = sys.version_info[:2]
