#!/usr/bin/env python3
"""Random-sequence fuzzer: 300 operations per seed on one loop, looking for what must never
happen whatever the program does: a crash (signal, abort, "Fatal Python error"), a Rust panic,
a hang, a leaked file descriptor, or a descriptor the loop closed or reused that it did not own.

The operations are the differential fuzzer's surface (``surface.make_call`` on the loop and its
objects, with ``values``' hostile arguments) plus what only a sequence can do: connections and
servers that live across operations, peers that write, shut down and vanish, protocols whose
``get_buffer``/``buffer_updated``/``data_received``... return bad buffers, raise or call back into
the loop and the transport, ``socket.close()``/``os.close()`` of a descriptor under a transport,
calls from other threads, running the loop in between, closing it and starting a new one.

    tests/fuzz/sequences.py --seeds 1,2,3                # those seeds (ferroloop)
    tests/fuzz/sequences.py --seconds 600                # fresh seeds for ten minutes
    tests/fuzz/sequences.py --seed 7 --verbose           # one seed, each operation printed
    tests/fuzz/sequences.py --seed 7 --ops 120           # its first 120 operations only

Every descriptor the sequence opens is checked at the end: still open, still the same file
(``fstat``: device and inode) unless the sequence itself closed it, and nothing left open once
everything is closed. A seed that closed a descriptor it did not open (the loop's own) is only
checked for crashes, panics and hangs.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fixtures  # noqa: E402
import known  # noqa: E402
from fixtures import FLAVORS, CaseTimeout, Env, fd_kind, open_fds  # noqa: E402
from surface import format_call, make_call, parse_seeds  # noqa: E402

OPS = 300
# Loop methods the sequences leave to the differential fuzzer: they run the loop (forever, or on
# an executor's thread with a callback that runs it again) or end it; a sequence wants the loop
# it has.
SEQUENCE_SKIPS = {"close", "run_forever", "run_until_complete", "run_in_executor"}
# No operation for this long: the child is stuck (operations are bounded at OP_ALARM in Python
# code; only native code that never returns to Python can get here).
HANG_TIMEOUT = 20.0
OP_ALARM = 5.0
CRASH_MARKERS = ("panicked at", "Fatal Python error", "PanicException", "Segmentation fault")


# -- the child ----------------------------------------------------------------------------------


class Evil:
    """A protocol whose callbacks misbehave as the seed says: bad buffers, exceptions, calls back
    into the loop and the transport."""

    def __init__(self, seq, rng, buffered):
        self.seq = seq
        self.rng = rng
        self.transport = None
        self.buf = bytearray(rng.choice((1, 16, 4096, 65536)))
        self.get_buffer_mode = rng.choice(
            ["ok"] * 6 + ["empty", "bytes", "raises", "object", "huge", "released", "shared"]
        )
        self.reenter = rng.random() < 0.5
        self.raises = rng.random() < 0.15

    def _maybe(self, where):
        if self.reenter and self.rng.random() < 0.3:
            self.seq.reentrant_op(where, self)
        if self.raises and self.rng.random() < 0.3:
            raise ValueError(f"evil {where}")

    def connection_made(self, transport):
        self.transport = transport
        self.seq.transports.append(transport)
        self._maybe("connection_made")

    def data_received(self, data):
        self._maybe("data_received")

    def eof_received(self):
        self._maybe("eof_received")
        return self.rng.choice((None, True, False))

    def connection_lost(self, exc):
        self._maybe("connection_lost")

    def pause_writing(self):
        self._maybe("pause_writing")

    def resume_writing(self):
        self._maybe("resume_writing")

    def get_buffer(self, sizehint):
        mode = self.get_buffer_mode
        self._maybe("get_buffer")
        if mode == "empty":
            return bytearray()
        if mode == "bytes":
            return b"read-only"
        if mode == "raises":
            raise ValueError("get_buffer")
        if mode == "object":
            return object()
        if mode == "huge":
            return bytearray(4 * 1024 * 1024)
        if mode == "released":
            m = memoryview(bytearray(32))
            m.release()
            return m
        if mode == "shared":
            return self.seq.shared_buffer
        return self.buf

    def buffer_updated(self, nbytes):
        self._maybe("buffer_updated")

    def datagram_received(self, data, addr):
        self._maybe("datagram_received")

    def error_received(self, exc):
        self._maybe("error_received")

    def process_exited(self):
        self._maybe("process_exited")

    def pipe_data_received(self, fd, data):
        self._maybe("pipe_data_received")

    def pipe_connection_lost(self, fd, exc):
        self._maybe("pipe_connection_lost")


class EvilStream(Evil, asyncio.Protocol):
    pass


class EvilBuffered(Evil, asyncio.BufferedProtocol):
    pass


class EvilDatagram(Evil, asyncio.DatagramProtocol):
    pass


class EvilSubprocess(Evil, asyncio.SubprocessProtocol):
    pass


class Sequence:
    """One seed's operations, on one flavour's loop."""

    def __init__(self, flavor, seed, nops, out, verbose, tmpdir):
        self.flavor = flavor
        self.rng = random.Random(f"ferroloop-seq/{seed}")
        self.nops = nops
        self.out = out
        self.verbose = verbose
        self.tmpdir = tmpdir
        self.protected = set(open_fds())  # the child's own (stdio, the result channel...)
        self.env = Env(flavor, tmpdir, debug=self.rng.random() < 0.2, pad=False)
        # One seed in four also closes descriptors it does not own (the loop's own): those are
        # checked for crashes, panics and hangs only; the others for fds as well.
        self.chaos = self.rng.random() < 0.25
        self.env.loop.slow_callback_duration = 1e9
        self.transports = []
        self.servers = []
        self.peers = []  # sockets at the other end of connections
        self.owned = {}  # fd -> (st_dev, st_ino, kind, object) of what the sequence opened
        self.wrecked = False  # the sequence closed a descriptor it does not own
        self.handles = []
        self.futures = []
        self.shared_buffer = bytearray(1024)
        self.depth = 0
        self.op_index = 0
        self.sub = 0
        self.errors = {}
        self.panics = []
        self.timeouts = 0

    # -- bookkeeping
    def own(self, obj, kind):
        fd = obj.fileno() if hasattr(obj, "fileno") else obj
        st = os.fstat(fd)
        self.owned[fd] = (st.st_dev, st.st_ino, kind, obj)
        self.env.keep(obj) if hasattr(obj, "close") else self.env.keep_fd(obj)
        return obj

    def disown(self, fd):
        """The loop owns it now (a transport's socket, a pipe's file), or nobody does."""
        self.owned.pop(fd, None)

    def log(self, text):
        self.out.write(f"S {self.op_index}.{self.sub} {text[:300]}\n")
        if self.verbose:
            sys.stderr.write(f"[{self.op_index}.{self.sub}] {text}\n")

    def outcome(self, fn):
        try:
            return fn()
        except CaseTimeout:
            raise
        except BaseException as e:
            name = type(e).__name__
            if name == "PanicException":
                self.panics.append(f"op {self.op_index}.{self.sub}: {e}")
            self.errors[name] = self.errors.get(name, 0) + 1
            if isinstance(e, (SystemExit, KeyboardInterrupt, GeneratorExit)):
                return None
            return None

    # -- the loop
    @property
    def loop(self):
        return self.env.loop

    def run_briefly(self, seconds=0.0):
        loop = self.loop
        if loop.is_closed() or loop.is_running():
            return

        async def pause():
            for _ in range(3):
                await asyncio.sleep(0)
            if seconds:
                await asyncio.sleep(seconds)

        coro = pause()
        try:
            self.env.outer_ctx.run(loop.run_until_complete, coro)
        finally:
            coro.close()

    def run_with_timeout(self, aw, timeout=0.05):
        loop = self.loop
        if loop.is_closed() or loop.is_running():
            if asyncio.iscoroutine(aw):
                aw.close()
            return
        fut = asyncio.ensure_future(aw, loop=loop)

        async def bounded():
            await asyncio.wait({fut}, timeout=timeout)

        self.env.outer_ctx.run(loop.run_until_complete, bounded())
        if not fut.done():
            fut.cancel()
        else:
            self.outcome(fut.exception if not fut.cancelled() else lambda: None)

    # -- operations
    def protocol_factory(self, kind="stream"):
        rng = random.Random(self.rng.random())
        cls = {
            "stream": EvilBuffered if rng.random() < 0.4 else EvilStream,
            "datagram": EvilDatagram,
            "subprocess": EvilSubprocess,
        }[kind]
        buffered = cls is EvilBuffered
        return lambda: cls(self, rng, buffered)

    def op_connect_pair(self):
        a, b = socket.socketpair()
        self.own(a, "socket")
        self.own(b, "socket")
        b.setblocking(False)
        self.peers.append(b)
        self.disown(a.fileno())
        self.run_with_timeout(self.loop.connect_accepted_socket(self.protocol_factory(), a), 1)

    def op_tcp(self):
        if not self.servers or self.rng.random() < 0.3:
            self.run_with_timeout(
                self.loop.create_server(self.protocol_factory(), "127.0.0.1", 0), 1
            )
            self._collect_servers()
            return
        server = self.rng.choice(self.servers)
        socks = server.sockets or ()
        if not socks:
            return
        addr = socks[0].getsockname()
        if self.rng.random() < 0.5:
            self.run_with_timeout(
                self.loop.create_connection(self.protocol_factory(), *addr[:2]), 1
            )
        else:
            s = socket.socket()
            self.own(s, "socket")
            s.setblocking(False)
            try:
                s.connect(addr)
            except BlockingIOError:
                pass
            self.peers.append(s)

    def _collect_servers(self):
        for obj in list(self.env.fixtures.values()):
            if isinstance(obj, asyncio.AbstractServer) and obj not in self.servers:
                self.servers.append(obj)

    def op_server_fixture(self):
        try:
            server = self.env.fixture("server")
        except BaseException:
            return
        if server not in self.servers:
            self.servers.append(server)

    def op_udp(self):
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.own(peer, "socket")
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        self.peers.append(peer)
        self.run_with_timeout(
            self.loop.create_datagram_endpoint(
                self.protocol_factory("datagram"), remote_addr=peer.getsockname()
            ),
            1,
        )

    def op_pipe(self):
        r, w = os.pipe()
        reading = self.rng.random() < 0.5
        ours, theirs = (r, w) if reading else (w, r)
        os.set_blocking(theirs, False)
        self.own(theirs, "pipe")
        f = open(ours, "rb" if reading else "wb", buffering=0)  # noqa: SIM115
        self.env.keep(f)
        connect = self.loop.connect_read_pipe if reading else self.loop.connect_write_pipe
        self.run_with_timeout(connect(self.protocol_factory(), f), 1)

    def op_subprocess(self):
        if self.rng.random() < 0.5:
            coro = self.loop.subprocess_exec(self.protocol_factory("subprocess"), "true")
        else:
            coro = self.loop.subprocess_shell(self.protocol_factory("subprocess"), "exit 3")
        self.run_with_timeout(coro, 2)

    def op_transport(self):
        if not self.transports:
            return
        tr = self.rng.choice(self.transports)
        rng = self.rng
        choice = rng.random()
        if choice < 0.35 and hasattr(tr, "write"):
            size = rng.choice((0, 1, 100, 65536, 300000))
            data = rng.choice((bytes, bytearray, memoryview))(b"x" * size)
            self.log(f"write {size} {type(data).__name__}")
            tr.write(data)
        elif choice < 0.45 and hasattr(tr, "sendto"):
            tr.sendto(b"d" * rng.choice((0, 1, 1000)))
        else:
            target = _kind(tr)
            call = make_call(rng, target)
            self.log("call " + format_call(call, target))
            from cases import _invoke

            record, value = _invoke(self.env, tr, call)
            if asyncio.iscoroutine(value):
                self.run_with_timeout(value)

    def op_peer(self):
        if not self.peers:
            return
        peer = self.rng.choice(self.peers)
        choice = self.rng.random()
        if peer.fileno() < 0:
            return
        if choice < 0.5:
            self.log(f"peer send fd={peer.fileno()}")
            try:
                if peer.type == socket.SOCK_DGRAM:
                    peer.send(b"p" * self.rng.choice((1, 100, 1400)))
                else:
                    peer.send(b"p" * self.rng.choice((1, 100, 65536)))
            except OSError:
                pass
        elif choice < 0.75:
            self.log("peer recv")
            try:
                peer.recv(1 << 20)
            except OSError:
                pass
        elif choice < 0.87:
            self.log("peer shutdown")
            try:
                peer.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        else:
            self.log("peer close")
            self.disown(peer.fileno())
            peer.close()

    def op_close_under(self):
        """Close a transport's socket (the Python object, or its fd with os.close) under it."""
        candidates = [t for t in self.transports if t.get_extra_info("socket") is not None]
        if not candidates:
            return
        tr = self.rng.choice(candidates)
        sock = tr.get_extra_info("socket")
        fd = sock.fileno()
        if fd < 0:
            return
        if self.rng.random() < 0.5:
            self.log(f"socket.close() under transport fd={fd}")
            # A TransportSocket: the real socket is inside.
            real = getattr(sock, "_sock", sock)
            self.disown(fd)
            real.close()
        else:
            self.log(f"os.close({fd}) under transport")
            self.disown(fd)
            os.close(fd)
            real = getattr(sock, "_sock", sock)
            # The socket object must not close the number again: it may be someone else's.
            real.detach()
        # The number is free: a new socket of ours may take it, and must keep it.
        self.op_connect_pair()

    def op_close_own_fd(self):
        """os.close() of one of the sequence's own sockets (the object is detached, so that it
        does not close the number again when someone else has it)."""
        socks = [fd for fd, v in self.owned.items() if isinstance(v[3], socket.socket)]
        if not socks:
            return
        fd = self.rng.choice(sorted(socks))
        obj = self.owned.pop(fd)[3]
        self.log(f"os.close({fd}) of our socket")
        os.close(fd)
        obj.detach()

    def op_close_foreign_fd(self):
        """os.close() of a descriptor the sequence did not open (the loop's epoll, eventfd,
        self-pipe...): from here on, only crashes, panics and hangs are checked."""
        fds = sorted(open_fds() - set(self.owned) - set(range(3)) - self.protected)
        if not fds:
            return
        fd = self.rng.choice(fds)
        self.log(f"os.close({fd}) not ours ({fd_kind(fd)})")
        self.wrecked = True
        try:
            os.close(fd)
        except OSError:
            pass

    def op_loop_call(self):
        call = make_call(self.rng, "loop")
        if call[0] in SEQUENCE_SKIPS:
            return
        self.log("call " + format_call(call))
        from cases import _invoke

        record, value = _invoke(self.env, self.loop, call)
        if record[:1] == ["ret"] and asyncio.isfuture(value):
            self.futures.append(value)
        if asyncio.iscoroutine(value):
            self.run_with_timeout(value)

    def op_object_call(self):
        target = self.rng.choice(["handle", "timer", "future", "task", "server"])
        call = make_call(self.rng, target)
        self.log(f"call {format_call(call, target)}")
        try:
            obj = self.env.fixture(target)
        except BaseException:
            return
        from cases import _invoke

        record, value = _invoke(self.env, obj, call)
        if asyncio.iscoroutine(value):
            self.run_with_timeout(value)
        # A new one next time; a server stays ours to close.
        self.env.fixtures.pop(target, None)
        if target == "server":
            self.servers.append(obj)

    def op_schedule(self):
        loop = self.loop
        rng = self.rng
        kind = rng.random()

        def callback():
            self.reentrant_op("callback", None)

        if kind < 0.4:
            h = loop.call_soon(callback)
        elif kind < 0.7:
            h = loop.call_later(rng.choice((0, 1e-6, 0.001, 3600)), callback)
        else:
            h = loop.call_at(loop.time() + rng.choice((-1, 0, 0.002)), callback)
        self.handles.append(h)

    def op_cancel(self):
        if self.handles:
            self.rng.choice(self.handles).cancel()

    def op_watch(self):
        if not self.owned:
            return
        fd = self.rng.choice(sorted(self.owned))
        loop = self.loop
        add = self.rng.random() < 0.6
        write = self.rng.random() < 0.5
        self.log(f"{'add' if add else 'remove'}_{'writer' if write else 'reader'}({fd})")
        if add:

            def ready():
                self.reentrant_op("watcher", None)
                try:
                    (loop.remove_writer if write else loop.remove_reader)(fd)
                except BaseException:
                    pass

            (loop.add_writer if write else loop.add_reader)(fd, ready)
        else:
            (loop.remove_writer if write else loop.remove_reader)(fd)

    def op_thread(self):
        loop = self.loop
        rng = random.Random(self.rng.random())
        done = threading.Event()

        def work():
            try:
                for _ in range(rng.choice((1, 10, 100))):
                    loop.call_soon_threadsafe(lambda: None)
                if rng.random() < 0.3 and self.transports:
                    tr = rng.choice(self.transports)
                    if hasattr(tr, "write"):
                        tr.write(b"from a thread")
            except BaseException:
                pass
            finally:
                done.set()

        t = threading.Thread(target=work, daemon=True)
        self.env.threads.append(t)
        t.start()
        if rng.random() < 0.5:

            async def wait():
                while not done.is_set():
                    await asyncio.sleep(0.001)

            self.run_with_timeout(wait(), 1)
        t.join(2)

    def op_task(self):
        loop = self.loop
        rng = self.rng
        peers = [p for p in self.peers if p.fileno() >= 0 and p.type == socket.SOCK_STREAM]

        async def work():
            choice = rng.random()
            if choice < 0.3 and peers:
                await loop.sock_recv(rng.choice(peers), 100)
            elif choice < 0.5 and peers:
                await loop.sock_sendall(rng.choice(peers), b"s" * rng.choice((1, 100000)))
            elif choice < 0.7:
                await asyncio.sleep(rng.choice((0, 0.001)))
                self.reentrant_op("task", None)
            else:
                fut = loop.create_future()
                loop.call_soon(fut.set_result, None)
                await fut

        task = loop.create_task(work())
        self.futures.append(task)
        if rng.random() < 0.3:
            task.cancel()

    def op_run(self):
        self.run_briefly(self.rng.choice((0, 0, 0.001, 0.005)))

    def op_gc(self):
        gc.collect()

    def op_new_loop(self):
        self.log("loop.close() and a new loop")
        loop = self.loop
        if loop.is_running():
            return
        for tr in self.transports:
            self.outcome(tr.abort)
        self.transports.clear()
        self.outcome(loop.close)
        self.env.loop = self.env.new_loop()
        self.env.fixtures.clear()
        self.servers.clear()
        self.handles.clear()
        self.futures.clear()

    OPS = {
        "op_connect_pair": 8,
        "op_tcp": 5,
        "op_server_fixture": 1,
        "op_udp": 3,
        "op_pipe": 3,
        "op_subprocess": 1,
        "op_transport": 20,
        "op_peer": 14,
        "op_close_under": 4,
        "op_close_own_fd": 2,
        "op_close_foreign_fd": 1,
        "op_loop_call": 12,
        "op_object_call": 4,
        "op_schedule": 6,
        "op_cancel": 2,
        "op_watch": 4,
        "op_thread": 2,
        "op_task": 5,
        "op_run": 18,
        "op_gc": 1,
        "op_new_loop": 0.5,
    }

    def reentrant_op(self, where, proto):
        """An operation from inside a callback the loop is running."""
        if self.depth >= 2:
            return
        self.depth += 1
        self.sub += 1
        try:
            name = self.rng.choice(
                ["op_transport", "op_loop_call", "op_schedule", "op_cancel", "op_watch", "op_peer"]
            )
            if proto is not None and proto.transport is not None and self.rng.random() < 0.5:
                tr = proto.transport
                action = self.rng.choice(["close", "abort", "pause_reading", "resume_reading"])
                self.log(f"in {where}: transport.{action}()")
                self.outcome(getattr(tr, action, lambda: None))
            else:
                self.log(f"in {where}: {name}")
                self.outcome(getattr(self, name))
        finally:
            self.depth -= 1

    def run(self):
        names = list(self.OPS)
        weights = [self.OPS[n] for n in names]
        if not self.chaos:
            weights[names.index("op_close_foreign_fd")] = 0
        for i in range(self.nops):
            self.op_index = i
            self.sub = 0
            name = self.rng.choices(names, weights)[0]
            self.log(name)
            # Again every second after the first (see cases.run_case).
            signal.setitimer(signal.ITIMER_REAL, OP_ALARM, 1.0)
            # Stuck past the alarm (in native code, or with the alarm lost): every thread's
            # stack goes to stderr before the parent gives up, to say where.
            faulthandler.dump_traceback_later(HANG_TIMEOUT - 5)
            try:
                self.outcome(getattr(self, name))
            except CaseTimeout:
                self.timeouts += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                faulthandler.cancel_dump_traceback_later()
        self.op_index = self.nops
        return self.finish()

    def finish(self):
        """Close everything; check what the sequence owns and what is left open."""
        self.log("cleanup")
        loop = self.loop
        stolen = []
        if not self.wrecked:
            for fd, (dev, ino, kind, _) in sorted(self.owned.items()):
                try:
                    st = os.fstat(fd)
                except OSError:
                    stolen.append(f"fd {fd} ({kind}) closed by someone else")
                    continue
                if (st.st_dev, st.st_ino) != (dev, ino):
                    stolen.append(f"fd {fd} ({kind}) is now another file ({fd_kind(fd)})")
        signal.setitimer(signal.ITIMER_REAL, OP_ALARM * 2, 1.0)
        faulthandler.dump_traceback_later(HANG_TIMEOUT - 5)
        try:
            for tr in self.transports:
                self.outcome(tr.abort if hasattr(tr, "abort") else tr.close)
            for server in self.servers:
                self.outcome(server.close)
            if not loop.is_closed() and not loop.is_running():
                self.outcome(self.run_briefly)
            for fut in self.futures:
                # Whatever create_task() returned (a hostile task factory may return anything).
                self.outcome(getattr(fut, "cancel", lambda: None))
            if not loop.is_closed() and not loop.is_running():
                self.outcome(self.run_briefly)
            self.transports = self.servers = self.futures = self.handles = None
            self.outcome(self.env.teardown)
        except CaseTimeout:
            self.timeouts += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            faulthandler.cancel_dump_traceback_later()
        # The loops' variables still hold their last transport, server and future: they would
        # keep them (and a connection not closed by then) alive through the leak check below.
        tr = server = fut = None  # noqa: F841
        self.owned.clear()
        self.env = loop = None
        # Helper threads (a child's waitpid, an executor's worker) hold their objects until they
        # end; what is left once they have and the collector has run is a leak.
        for t in threading.enumerate():
            if t is not threading.current_thread():
                t.join(1)
        gc.collect()
        gc.collect()
        leaked = sorted(open_fds() - self.protected)
        if self.timeouts:
            # Something blocked until the alarm; what it held may not have been closed.
            self.wrecked = True
        return {
            "leak_details": [_describe_fd(fd) for fd in leaked] if not self.wrecked else [],
            "wrecked": self.wrecked,
            "stolen": stolen,
            "leaked": [] if self.wrecked else [f"{fd} ({fd_kind(fd)})" for fd in leaked],
            "panics": self.panics,
            "timeouts": self.timeouts,
            "errors": self.errors,
        }


def _describe_fd(fd):
    """What a leaked descriptor is, and which live Python objects still hold it."""
    text = f"{fd} ({fd_kind(fd)})"
    if fd_kind(fd) == "socket":
        s = socket.socket(fileno=fd)
        try:
            text += f" {s.family.name} {s.type.name} local={s.getsockname()!r}"
            try:
                text += f" peer={s.getpeername()!r}"
            except OSError:
                pass
        finally:
            s.detach()
    holders = []
    objects = gc.get_objects()
    for obj in objects:
        if isinstance(obj, socket.socket) and obj.fileno() == fd:
            referrers = gc.get_referrers(obj)
            for r in referrers:
                if r is objects:
                    continue
                line = type(r).__name__
                if hasattr(r, "get_extra_info"):
                    # A transport: who keeps it alive?
                    line += " <- " + ", ".join(
                        _name(rr)
                        for rr in gc.get_referrers(r)
                        if rr is not objects and rr is not referrers
                    )
                holders.append(line)
            del referrers
    del objects
    return text + (f"; {holders}" if holders else "; no Python object holds it")


def _name(obj):
    if isinstance(obj, dict):
        return f"dict({sorted(map(str, obj))[:6]})"
    if type(obj).__name__ == "frame":
        return f"frame {obj.f_code.co_name}"
    return type(obj).__name__


def _kind(transport):
    """The surface table that fits a transport."""
    if hasattr(transport, "sendto"):
        return "udp"
    if hasattr(transport, "get_pid"):
        return "rpipe"  # its few methods are a read pipe's subset; the rest raise the same
    if hasattr(transport, "write") and hasattr(transport, "pause_reading"):
        return "tr_unix"
    if hasattr(transport, "write"):
        return "wpipe"
    return "rpipe"


def worker(flavor, seed, nops, verbose):
    out = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    fixtures.install_guard()
    fixtures.install_recording()
    if flavor == "ferroloop":
        import ferroloop  # noqa: F401
        from ferroloop import _unix

        # The one descriptor ferroloop keeps for the process, made on first need (a pipe
        # closed under its transport): made now, it is the child's own, not a leak of
        # whichever case or seed first needed it.
        _unix._no_fd()
    tmpdir = tempfile.mkdtemp(prefix="ferroloop-seq-")
    os.chdir(tmpdir)

    def alarm(signum, frame):
        raise CaseTimeout()

    signal.signal(signal.SIGALRM, alarm)
    seq = Sequence(flavor, seed, nops, out, verbose, tmpdir)
    result = seq.run()
    fixtures.LOG.env = None
    out.write("R " + json.dumps(result) + "\n")
    out.close()
    os._exit(0)


# -- the parent ---------------------------------------------------------------------------------


def python_argv():
    return [sys.executable, *subprocess._args_from_interpreter_flags()]


def repro_command(seed, ops=None, flavor="ferroloop"):
    script = os.path.relpath(os.path.abspath(__file__))
    argv = [os.path.basename(sys.executable), *subprocess._args_from_interpreter_flags(), script]
    argv += ["--seed", str(seed)]
    if ops is not None:
        argv += ["--ops", str(ops)]
    if flavor != "ferroloop":
        argv += ["--flavor", flavor]
    return " ".join(argv + ["--verbose"])


def run_seed(flavor, seed, nops, verbose=False):
    """{"result": ..., "last": last operation started, "crash"/"hang": ..., "stderr": ...}"""
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env["PYTHONFAULTHANDLER"] = "1"
    argv = [*python_argv(), os.path.abspath(__file__), "--worker", flavor, "--seed", str(seed)]
    argv += ["--ops", str(nops)] + (["--verbose"] if verbose else [])
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env
        )
        last, result, buf, hung = None, None, b"", False
        deadline = time.monotonic() + HANG_TIMEOUT
        while True:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                hung = True
                break
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.startswith(b"S "):
                    last = line[2:].decode(errors="replace")
                    deadline = time.monotonic() + HANG_TIMEOUT
                elif line.startswith(b"R "):
                    result = json.loads(line[2:])
        if hung:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    report = {"result": result, "last": last, "stderr": stderr, "returncode": proc.returncode}
    if hung:
        report["hang"] = True
    elif result is None:
        report["crash"] = proc.returncode
    return report


def problems(report, tolerated=None):
    """What is wrong with one seed's run: a list of lines (empty: nothing). Leaks a pending
    entry explains go to ``tolerated`` (their keys) instead."""
    tolerated = set() if tolerated is None else tolerated
    out = []
    if report.get("hang"):
        out.append(f"hang: no progress for {HANG_TIMEOUT:.0f} s after: {report['last']}")
    if "crash" in report:
        out.append(f"crash: exit status {report['crash']} during: {report['last']}")
        tail = [
            line
            for line in report["stderr"].splitlines()
            if "never awaited" not in line and "tracemalloc" not in line
        ]
        out.append("stderr ends: " + "\n".join(tail[-25:]))
    stderr = report["stderr"]
    for marker in CRASH_MARKERS:
        if marker in stderr:
            i = stderr.index(marker)
            out.append(f"{marker!r} in stderr: " + stderr[max(0, i - 300) : i + 600])
            break
    result = report["result"] or {}
    for p in result.get("panics", []):
        out.append(f"Rust panic: {p}")
    for s in result.get("stolen", []):
        out.append(f"descriptor not the sequence's any more: {s}")
    details = result.get("leak_details", [])
    if result.get("leaked"):
        keys = {known.explain_leak(d) for d in details}
        if len(details) == len(result["leaked"]) and None not in keys:
            tolerated.update(keys)
        else:
            out.append(f"leaked descriptors: {', '.join(result['leaked'])}")
            out.extend(f"  {d}" for d in details)
    return out


def fatal(report):
    """A crash, a hang or a panic: a failure however often it happens."""
    result = report["result"] or {}
    markers = any(m in report["stderr"] for m in CRASH_MARKERS)
    return bool(report.get("hang") or "crash" in report or markers or result.get("panics"))


def last_op(report):
    last = report.get("last") or ""
    head = last.split(" ", 1)[0]
    try:
        return int(head.split(".")[0])
    except ValueError:
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=FLAVORS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help="run one seed")
    parser.add_argument("--seeds", help="seeds: 1,2,5-8")
    parser.add_argument("--fresh", type=int, default=0, help="add this many fresh seeds")
    parser.add_argument("--seconds", type=float, help="fresh seeds until this much time is spent")
    parser.add_argument("--ops", type=int, default=OPS, help=f"operations per seed ({OPS})")
    parser.add_argument("--flavor", choices=FLAVORS, default="ferroloop")
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once (2)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each operation")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.seed, args.ops, args.verbose)
        return 0
    seeds = []
    if args.seed is not None:
        seeds.append(args.seed)
    if args.seeds:
        seeds += parse_seeds(args.seeds)
    fresh = [random.SystemRandom().randrange(10**6, 10**9) for _ in range(args.fresh)]
    if fresh:
        print(f"sequences: fresh seeds {','.join(map(str, fresh))}")
    seeds += fresh
    deadline = time.monotonic() + args.seconds if args.seconds else None
    start = time.monotonic()
    failed, done, unconfirmed, tolerated = [], 0, [], set()
    stats = {"wrecked": 0, "timeouts": 0}
    lock = threading.Lock()
    queue = list(seeds)

    def next_seed():
        with lock:
            if queue:
                return queue.pop(0)
            if deadline is not None and time.monotonic() < deadline:
                seed = random.SystemRandom().randrange(10**6, 10**9)
                print(f"sequences: fresh seed {seed}", flush=True)
                return seed
            return None

    def work():
        nonlocal done
        while (seed := next_seed()) is not None:
            report = run_seed(args.flavor, seed, args.ops, args.verbose and args.seed is not None)
            found = problems(report, tolerated)
            if found and not fatal(report):
                # A leak or a descriptor mix-up depends on timing (which connection was accepted
                # before the cleanup...): it fails the run when it shows in 2 of 3 runs.
                again = [problems(run_seed(args.flavor, seed, args.ops)) for _ in range(2)]
                if not any(again):
                    with lock:
                        unconfirmed.append((seed, found))
                    found = []
            with lock:
                done += 1
                result = report["result"] or {}
                stats["wrecked"] += bool(result.get("wrecked"))
                stats["timeouts"] += result.get("timeouts", 0)
                if args.verbose and args.seed is not None:
                    sys.stderr.write(report["stderr"][-5000:])
                if found:
                    failed.append(seed)
                    print(f"\nSEED {seed} ({args.flavor}):")
                    for line in found:
                        print("    " + line.replace("\n", "\n    "))
                    n = last_op(report)
                    print(f"    reproduce: {repro_command(seed, None, args.flavor)}")
                    if n is not None and ("crash" in report or report.get("hang")):
                        print(f"    (the first {n + 1} operations: --ops {n + 1})")

    threads = [threading.Thread(target=work) for _ in range(max(1, args.jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    for seed, found in unconfirmed:
        print(f"sequences: seed {seed} did not show this again in 2 more runs (not a failure):")
        for line in found:
            print("    " + line.replace("\n", "\n    ")[:2000])
    print(
        f"sequences: {done} seeds x {args.ops} operations on {args.flavor} in {elapsed:.1f}s "
        f"({stats['wrecked']} closed a descriptor not theirs or were stopped by the "
        f"{OP_ALARM:.0f} s alarm ({stats['timeouts']} operations): checked for crashes only)"
    )
    if tolerated:
        print(f"sequences: tolerated (tests/fuzz/pending.txt): {', '.join(sorted(tolerated))}")
    print("sequences: " + (f"FAILED (seeds {','.join(map(str, failed))})" if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
