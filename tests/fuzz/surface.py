"""The public surface both fuzzers call: every method of the loop, the transports, servers,
handles and futures, with the kind of each parameter; and the seeded generator of differential
cases over it.

A parameter kind names the values that make sense for it ("good") and the ones that probe its
edges ("hostile"); a case draws each argument from one or the other, or from every value there is.
"""

from __future__ import annotations

import random

from values import (
    ADDRESSES,
    ALL,
    BYTES,
    CALLBACKS,
    CONTAINERS,
    CONTEXTS,
    COROUTINES,
    EH_CONTEXTS,
    EVIL_NUMBERS,
    EVIL_OBJECTS,
    EXCEPTIONS,
    EXECUTORS,
    FDS,
    FILENOS,
    FUTURES,
    HANDLERS,
    NUMBERS,
    PROTOCOLS,
    SIGNALS,
    SOCKETS,
    SSL,
    STRINGS,
)

_FEW = ["None", "1", "object()", "'x'"]
# Sizes: a recv of 2**31 bytes allocates 2 GiB (which the debug allocator of -X dev fills): the
# overflow edge is at 2**63 for Py_ssize_t, and these stay.
_SIZES = [n for n in NUMBERS if n not in ("2**31-1", "2**31", "2**32")]

# kind -> (good values, hostile values)
KINDS = {
    "arg": (["1", "None", "'x'"], ALL),
    "cb": (
        ["cb", "cb", "cb_raise", "partial_cb", "cb_soon", "cb_method", "cb_class", "cb_builtin"],
        CALLBACKS + COROUTINES + _FEW + NUMBERS[:3],
    ),
    "delay": (["0", "1e-9", "-1", "3600"], NUMBERS + EVIL_NUMBERS + _FEW),
    "when": (["now", "now+3600", "0"], NUMBERS + EVIL_NUMBERS + _FEW),
    "timeout": (["None", "1e-9", "3600"], NUMBERS + EVIL_NUMBERS + _FEW),
    "ctx": (["None", "ctx"], CONTEXTS + ["object()", "1", "{}", "the_loop"]),
    "fd": (["fd_sock", "sock"], FDS + SOCKETS + FILENOS + NUMBERS[:12] + EVIL_NUMBERS[:6]),
    "sock": (["sock"], SOCKETS + FDS[:3] + FILENOS[:4] + _FEW),
    "sockd": (["sock_udp"], SOCKETS + _FEW),
    "sockc": (["sock_tcp_fresh"], SOCKETS + _FEW),
    "sockl": (["sock_listen"], SOCKETS + _FEW),
    "n": (["1", "100", "65536"], _SIZES + EVIL_NUMBERS + _FEW),
    "limit": (["None", "0", "1", "65536"], NUMBERS + EVIL_NUMBERS + _FEW),
    "buf": (["bytearray(16)"], BYTES + _FEW),
    "data": (
        ["b'x'", "b'x'*65536", "bytearray(b'xy')", "memoryview(b'xyz')"],
        BYTES + STRINGS[:4] + CONTAINERS[:6] + EVIL_OBJECTS[:3],
    ),
    "datalist": (["[b'a', b'b']", "(b'a',)", "gen"], BYTES + CONTAINERS + _FEW),
    "addr": (["addr_listen", "('127.0.0.1', 0)"], ADDRESSES + _FEW),
    "host": (
        ["'127.0.0.1'", "None"],
        ["'::1'", "''", "'x'", "b'127.0.0.1'", "1", "object()", "['127.0.0.1']", "'127.0.0.1'"],
    ),
    "port": (["0", "None"], NUMBERS[:12] + ["'80'", "'x'", "Idx(1)", "object()"]),
    "family": (["0", "2"], ["10", "1", "-1", "2**31", "'x'", "None", "Idx(2)"]),
    "socktype": (["0", "1", "2"], ["-1", "2**31", "'x'", "None", "99"]),
    "niflags": (["1", "3"], ["0", "-1", "2**31", "'x'", "None"]),
    "bool": (["True", "False"], ["BoolRaises()", "BoolLies()", "None", "0", "'x'", "[]"]),
    "pf": (["proto", "proto_buffered"], PROTOCOLS + _FEW),
    "pfd": (["proto_dgram"], PROTOCOLS + _FEW),
    "proto_inst": (["proto_instance"], ["None", "1", "object()", "proto", "the_loop"]),
    "path": (["unix_path"], ["unix_path_long", "unix_abstract", "None", "1", "b''", "''"]),
    "pipe_r": (["pipe_r_file"], ["pipe_w_file", "fd_pipe_r", "sock", "None", "1", "file_obj"]),
    "pipe_w": (["pipe_w_file"], ["pipe_r_file", "fd_pipe_w", "sock", "None", "1", "file_obj"]),
    "program": (["'true'"], ["b'true'", "'x'", "''", "1", "None", "['true']", "'\\x00'"]),
    "cmd": (["'true'", "'exit 3'"], ["b'true'", "1", "None", "['true']", "'\\x00'", "''"]),
    "stdio": (["-1", "-3", "None"], ["fd_sock", "fd_devnull", "sock", "1", "'x'", "-2", "9999"]),
    "ssl": (["None", "ssl_client"], SSL + ["False", "1", "object()"]),
    "ssl_srv": (["None", "ssl_server"], SSL + ["False", "1", "object()"]),
    "ssl_any": (["ssl_client", "ssl_server"], SSL + _FEW),
    "transport": (["the_transport"], ["None", "1", "object()", "the_server", "sock"]),
    "file": (["file_obj"], ["fd_file", "sock", "None", "1", "'x'", "str_io"]),
    "executor": (["None", "executor"], EXECUTORS + _FEW),
    "coro": (["coro", "coro_raise", "coro_forever"], COROUTINES + FUTURES + _FEW),
    "awaitable": (["coro", "coro_raise", "fut_done", "fut_exc"], COROUTINES + FUTURES + _FEW),
    "taskfactory": (["None", "task_factory"], ["1", "object()", "cb", "coro_fn"]),
    "name": (["None", "'n'"], ["1", "object()", "ReprRaises()", "b'n'"]),
    "exc": (["ValueError()"], EXCEPTIONS + _FEW),
    "handler": (["None", "handler", "handler_raise"], HANDLERS + _FEW + ["cb"]),
    "ehctx": (EH_CONTEXTS[:2], EH_CONTEXTS + ["None", "1", "[]", "'x'", "HashRaises()"]),
    "sig": (["SIGUSR1", "SIGUSR2"], SIGNALS + ["None", "'x'", "Idx(10)", "10.0"]),
    "infoname": (
        ["'peername'", "'sockname'", "'socket'", "'pipe'"],
        ["None", "1", "HashRaises()", "'x'", "''", "object()"],
    ),
    "timer_other": (["timer_other"], ["the_handle", "1", "None", "object()"]),
}

# Targets: the fixture a case's calls are made on (fixtures.Env._fx_<target>).
TARGETS = {
    "loop": 60,
    "tr_unix": 10,
    "tr_unix_buffered": 4,
    "tr_tcp": 3,
    "server": 4,
    "udp": 4,
    "rpipe": 2,
    "wpipe": 3,
    "handle": 3,
    "timer": 3,
    "future": 3,
    "task": 2,
}

# method -> (positional kinds, keyword kinds). "*kind": 0-2 extra positionals of that kind.
# Special names: "set:attr"/"get:attr" (attribute access), "repr", "hash", "weakref", "bool".
C = {"context": "ctx"}
LOOP = {
    "call_soon": (["cb", "*arg"], C),
    "call_later": (["delay", "cb", "*arg"], C),
    "call_at": (["when", "cb", "*arg"], C),
    "call_soon_threadsafe": (["cb", "*arg"], C),
    "time": ([], {}),
    "create_future": ([], {}),
    "create_task": (["coro"], {"name": "name", "context": "ctx"}),
    "set_task_factory": (["taskfactory"], {}),
    "get_task_factory": ([], {}),
    "run_until_complete": (["awaitable"], {}),
    "run_forever": ([], {}),
    "stop": ([], {}),
    "is_running": ([], {}),
    "is_closed": ([], {}),
    "close": ([], {}),
    "shutdown_asyncgens": ([], {}),
    "shutdown_default_executor": (["*timeout"], {"timeout": "timeout"}),
    "run_in_executor": (["executor", "cb", "*arg"], {}),
    "set_default_executor": (["executor"], {}),
    "add_reader": (["fd", "cb", "*arg"], {}),
    "add_writer": (["fd", "cb", "*arg"], {}),
    "remove_reader": (["fd"], {}),
    "remove_writer": (["fd"], {}),
    "sock_recv": (["sock", "n"], {}),
    "sock_recv_into": (["sock", "buf"], {}),
    "sock_recvfrom": (["sockd", "n"], {}),
    "sock_recvfrom_into": (["sockd", "buf"], {"nbytes": "n"}),
    "sock_sendall": (["sock", "data"], {}),
    "sock_sendto": (["sockd", "data", "addr"], {}),
    "sock_connect": (["sockc", "addr"], {}),
    "sock_accept": (["sockl"], {}),
    "sock_sendfile": (["sock", "file"], {"offset": "n", "count": "n", "fallback": "bool"}),
    "getaddrinfo": (
        ["host", "port"],
        {"family": "family", "type": "socktype", "proto": "n", "flags": "n"},
    ),
    "getnameinfo": (["addr", "niflags"], {}),
    "create_connection": (
        ["pf", "host", "port"],
        {
            "ssl": "ssl",
            "family": "family",
            "sock": "sockc",
            "local_addr": "addr",
            "server_hostname": "host",
            "ssl_handshake_timeout": "timeout",
            "happy_eyeballs_delay": "timeout",
            "interleave": "n",
        },
    ),
    "create_server": (
        ["pf", "host", "port"],
        {
            "family": "family",
            "flags": "n",
            "sock": "sockl",
            "backlog": "n",
            "ssl": "ssl_srv",
            "reuse_address": "bool",
            "reuse_port": "bool",
            "ssl_handshake_timeout": "timeout",
            "start_serving": "bool",
        },
    ),
    "create_unix_connection": (
        ["pf", "path"],
        {"ssl": "ssl", "sock": "sock", "server_hostname": "host"},
    ),
    "create_unix_server": (
        ["pf", "path"],
        {"sock": "sockl", "backlog": "n", "ssl": "ssl_srv", "start_serving": "bool"},
    ),
    "connect_accepted_socket": (
        ["pf", "sock"],
        {"ssl": "ssl_srv", "ssl_handshake_timeout": "timeout"},
    ),
    "create_datagram_endpoint": (
        ["pfd"],
        {
            "local_addr": "addr",
            "remote_addr": "addr",
            "family": "family",
            "proto": "n",
            "flags": "n",
            "reuse_port": "bool",
            "allow_broadcast": "bool",
            "sock": "sockd",
        },
    ),
    "connect_read_pipe": (["pf", "pipe_r"], {}),
    "connect_write_pipe": (["pf", "pipe_w"], {}),
    "subprocess_exec": (
        ["pf", "program", "*arg"],
        {"stdin": "stdio", "stdout": "stdio", "stderr": "stdio"},
    ),
    "subprocess_shell": (["pf", "cmd"], {"stdin": "stdio", "stdout": "stdio", "stderr": "stdio"}),
    "start_tls": (
        ["transport", "proto_inst", "ssl_any"],
        {"server_side": "bool", "server_hostname": "host", "ssl_handshake_timeout": "timeout"},
    ),
    "sendfile": (["transport", "file"], {"offset": "n", "count": "n", "fallback": "bool"}),
    "add_signal_handler": (["sig", "cb", "*arg"], {}),
    "remove_signal_handler": (["sig"], {}),
    "set_exception_handler": (["handler"], {}),
    "get_exception_handler": ([], {}),
    "default_exception_handler": (["ehctx"], {}),
    "call_exception_handler": (["ehctx"], {}),
    "get_debug": ([], {}),
    "set_debug": (["bool"], {}),
    "set:slow_callback_duration": (["delay"], {}),
    "get:slow_callback_duration": ([], {}),
    "repr": ([], {}),
}
STREAM = {
    "write": (["data"], {}),
    "writelines": (["datalist"], {}),
    "write_eof": ([], {}),
    "can_write_eof": ([], {}),
    "close": ([], {}),
    "abort": ([], {}),
    "is_closing": ([], {}),
    "is_reading": ([], {}),
    "pause_reading": ([], {}),
    "resume_reading": ([], {}),
    "set_write_buffer_limits": (["*limit"], {"high": "limit", "low": "limit"}),
    "get_write_buffer_limits": ([], {}),
    "get_write_buffer_size": ([], {}),
    "get_extra_info": (["infoname"], {"default": "arg"}),
    "set_protocol": (["proto_inst"], {}),
    "get_protocol": ([], {}),
    "weakref": ([], {}),
}
SERVER = {
    "close": ([], {}),
    "get_loop": ([], {}),
    "is_serving": ([], {}),
    "start_serving": ([], {}),
    "serve_forever": ([], {}),
    "wait_closed": ([], {}),
    "get:sockets": ([], {}),
    "close_clients": ([], {}),
    "abort_clients": ([], {}),
    "__aenter__": ([], {}),
    "__aexit__": (["*arg"], {}),
}
DATAGRAM = {
    "sendto": (["data", "*addr"], {}),
    "close": ([], {}),
    "abort": ([], {}),
    "is_closing": ([], {}),
    "get_extra_info": (["infoname"], {"default": "arg"}),
    "get_write_buffer_size": ([], {}),
    "get_protocol": ([], {}),
    "set_protocol": (["proto_inst"], {}),
}
READ_PIPE = {
    "pause_reading": ([], {}),
    "resume_reading": ([], {}),
    "is_reading": ([], {}),
    "close": ([], {}),
    "is_closing": ([], {}),
    "get_extra_info": (["infoname"], {}),
    "get_protocol": ([], {}),
    "set_protocol": (["proto_inst"], {}),
}
WRITE_PIPE = {
    "write": (["data"], {}),
    "writelines": (["datalist"], {}),
    "write_eof": ([], {}),
    "can_write_eof": ([], {}),
    "abort": ([], {}),
    "close": ([], {}),
    "is_closing": ([], {}),
    "get_write_buffer_size": ([], {}),
    "set_write_buffer_limits": (["*limit"], {"high": "limit", "low": "limit"}),
    "get_write_buffer_limits": ([], {}),
    "get_extra_info": (["infoname"], {}),
}
HANDLE = {
    "cancel": ([], {}),
    "cancelled": ([], {}),
    "get_context": ([], {}),
    "repr": ([], {}),
    "weakref": ([], {}),
    "hash": ([], {}),
    "__eq__": (["arg"], {}),
}
TIMER = dict(
    HANDLE,
    when=([], {}),
    __lt__=(["timer_other"], {}),
    __le__=(["timer_other"], {}),
    __eq__=(["timer_other"], {}),
)
FUTURE = {
    "set_result": (["arg"], {}),
    "set_exception": (["exc"], {}),
    "cancel": (["*arg"], {"msg": "arg"}),
    "add_done_callback": (["cb"], {"context": "ctx"}),
    "remove_done_callback": (["cb"], {}),
    "result": ([], {}),
    "exception": ([], {}),
    "done": ([], {}),
    "cancelled": ([], {}),
    "get_loop": ([], {}),
}
TASK = dict(
    FUTURE,
    get_coro=([], {}),
    get_name=([], {}),
    set_name=(["arg"], {}),
    get_stack=([], {"limit": "n"}),
    cancelling=([], {}),
    uncancel=([], {}),
)
del TASK["set_result"], TASK["set_exception"]

METHODS = {
    "loop": LOOP,
    "tr_unix": STREAM,
    "tr_unix_buffered": STREAM,
    "tr_tcp": STREAM,
    "server": SERVER,
    "udp": DATAGRAM,
    "rpipe": READ_PIPE,
    "wpipe": WRITE_PIPE,
    "handle": HANDLE,
    "timer": TIMER,
    "future": FUTURE,
    "task": TASK,
}

# Where a case's calls run.
#   direct: on the idle loop; running: in a callback of the running loop; closed: after
#   loop.close(); thread: on another thread while the loop runs; thread-idle: on another thread
#   while it does not; cb:<point>: from inside that callback of a protocol on the loop.
MODES = {
    "direct": 40,
    "running": 20,
    "closed": 10,
    "thread": 8,
    "thread-idle": 4,
    "cb:connection_made": 4,
    "cb:data_received": 6,
    "cb:eof_received": 3,
    "cb:connection_lost": 3,
    "cb:get_buffer": 4,
    "cb:buffer_updated": 4,
}

# Methods that only make sense on an idle loop (they run it): asked from a running loop they
# raise at once on both loops, which is worth a few cases, not a fifth of them.
RUNS_LOOP = {"run_until_complete", "run_forever"}


def _pick(rng, table):
    names = list(table)
    return rng.choices(names, weights=[table[n] for n in names])[0]


_ANY_SIZE = [v for v in ALL if v not in ("2**31-1", "2**31", "2**32")]


def draw(rng, kind):
    good, hostile = KINDS[kind]
    r = rng.random()
    if r < 0.55:
        return rng.choice(good)
    if r < 0.9:
        return rng.choice(hostile)
    return rng.choice(_ANY_SIZE if kind == "n" else ALL)


def make_call(rng, target):
    methods = METHODS[target]
    name = rng.choice(sorted(methods))
    positional, keywords = methods[name]
    args = []
    for kind in positional:
        if kind.startswith("*"):
            args.extend(draw(rng, kind[1:]) for _ in range(rng.choice((0, 0, 1, 2))))
        else:
            args.append(draw(rng, kind))
    kwargs = {}
    for key, kind in sorted(keywords.items()):
        if rng.random() < 0.3:
            kwargs[key] = draw(rng, kind)
    r = rng.random()
    if r < 0.04 and args:
        args.pop()  # one argument too few
    elif r < 0.08:
        args.append(rng.choice(ALL))  # one too many
    elif r < 0.1:
        kwargs["bogus"] = rng.choice(ALL)
    return [name, args, kwargs]


def generate(seed, index):
    """Case ``index`` of ``seed``: the same two numbers always give the same case."""
    rng = random.Random(f"ferroloop-fuzz/{seed}/{index}")
    target = _pick(rng, TARGETS)
    mode = _pick(rng, MODES)
    ncalls = rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
    calls = [make_call(rng, target) for _ in range(ncalls)]
    if mode != "direct" and any(c[0] in RUNS_LOOP for c in calls) and rng.random() < 0.8:
        mode = "direct"
    if mode == "thread" and any(c[0] == "stop" for c in calls):
        # stop() from another thread races the loop's own iteration on both loops (asyncio's
        # run_forever resets the flag as it returns): which run it stops is the scheduler's.
        mode = "thread-idle"
    return {
        "id": f"{seed}/{index}",
        "target": target,
        "mode": mode,
        "debug": rng.random() < 0.2,
        "calls": calls,
    }


def format_call(call, target="loop"):
    name, args, kwargs = call
    parts = list(args) + [f"{k}={v}" for k, v in kwargs.items()]
    return f"{target}.{name}({', '.join(parts)})"


def format_case(case):
    calls = "; ".join(format_call(c, case["target"]) for c in case["calls"])
    debug = " debug" if case["debug"] else ""
    return f"[{case['id']} {case['mode']}{debug}] {calls}"


def parse_seeds(text):
    """ "1,2,5-8" -> [1, 2, 5, 6, 7, 8]"""
    seeds = []
    for part in text.split(","):
        if "-" in part.strip("-"):
            lo, hi = part.split("-")
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    return seeds
