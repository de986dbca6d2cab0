"""Helpers for the tests that run real servers and test runners (tests/test_servers.py) and the
runner's reach into child processes (tests/test_adopt.py).

A server runs in a session of its own, so that its workers and everything else it starts share
one process group, and that group is killed (TERM, then KILL) however the test ends.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import child_env

# The packages are in the test extra. A run that says they must be there (make test, and
# tests/pythons.sh on every release build) fails without them; any other run skips, and says why.
REQUIRE_ENV = "FERROLOOP_REQUIRE_SERVERS"

# What the ASGI application of the server tests answers: the loop it runs on and its process.
ASGI_APP = """\
import asyncio, json, os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = json.dumps(
        {"loop": type(asyncio.get_running_loop()).__module__, "pid": os.getpid()}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""


def need(module: str):
    """``module`` imported, or the test skipped with the reason (failed where required)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        return importlib.import_module(module)
    return pytest.importorskip(
        module,
        reason=(
            f"{module} is not installed: the recipe tests need the test extra "
            f"(pip install '.[test]'); {REQUIRE_ENV}=1 makes this a failure, as make test and "
            "tests/pythons.sh do except on the debug build, which installs no third-party packages"
        ),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def live_members(pgid: int) -> list[str]:
    """The processes of group ``pgid`` that have not exited (zombies are done), as 'pid cmd'."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: fields start after it.
        comm_end = text.rindex(")")
        fields = text[comm_end + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(f"{stat.parent.name} {text[text.index('(') + 1 : comm_end]}")
    return members


def _stop_group(proc: subprocess.Popen) -> list[str]:
    """TERM the group, KILL what is left after 5 s; returns what is alive even after that."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            # Reap the leader as it goes, so it does not count as alive.
            proc.poll()
            if not live_members(proc.pid):
                return []
            time.sleep(0.05)
    return live_members(proc.pid)


class Server:
    """A running server: its process, port and captured output."""

    def __init__(self, proc: subprocess.Popen, port: int, out: Path, err: Path):
        self.proc = proc
        self.port = port
        self.out = out
        self.err = err

    def output(self) -> str:
        return f"--- stdout\n{self.out.read_text()}\n--- stderr\n{self.err.read_text()}"

    def get(self, path: str = "/", timeout: float = 10) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            # A new connection per request, so that requests can land on different workers.
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 200, body
        return json.loads(body)

    def answers_from(self, workers: int, timeout: float = 15) -> dict[int, set[str]]:
        """Requests until ``workers`` distinct processes have answered: {pid: {loop module}}."""
        seen: dict[int, set[str]] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < workers and time.monotonic() < deadline:
            answer = self.get()
            seen.setdefault(answer["pid"], set()).add(answer["loop"])
        assert len(seen) == workers, f"{len(seen)} of {workers} workers answered\n{self.output()}"
        return seen


@contextlib.contextmanager
def serving(argv, *, cwd: Path, port: int, env=None, timeout: float = 20):
    """Start ``argv`` (a server listening on 127.0.0.1:``port``) and yield a Server once it
    accepts connections; its whole process group is stopped afterwards, and a process of it
    still alive after a KILL fails the test."""
    out, err = cwd / f"server-{port}.out", cwd / f"server-{port}.err"
    with out.open("w") as out_file, err.open("w") as err_file:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            start_new_session=True,
        )
    server = Server(proc, port, out, err)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}\n{server.output()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if time.monotonic() > deadline:
                pytest.fail(f"server not listening after {timeout} s\n{server.output()}")
            time.sleep(0.05)
        yield server
    finally:
        stragglers = _stop_group(proc)
        proc.wait(timeout=5)
        assert not stragglers, f"still alive after SIGKILL: {stragglers}"
