"""The README's "Using ferroloop with ..." recipes, run for real.

Each server test starts the server on 127.0.0.1 as a user would (its CLI or its Python API),
sends HTTP requests until every worker process has answered, and checks from the answers (the
application returns ``type(asyncio.get_running_loop()).__module__`` and its pid) that each worker
ran on ferroloop. The pytest-asyncio and anyio tests run pytest on a test file with the recipe's
configuration and check the loop the test body ran on.

The packages come with the test extra; see server_helpers.need for when a missing one skips.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import child_env
from server_helpers import ASGI_APP, free_port, need, serving

pytestmark = pytest.mark.timeout(60)

PYTHON = sys.executable
RUNNER = [PYTHON, "-m", "ferroloop"]
NOTICE = "ferroloop: "


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "app.py").write_text(ASGI_APP)
    return tmp_path


def assert_all_ferroloop(answers, workers, server):
    """Every process that answered ran its loop on ferroloop, and none of them is the process
    the test started when there are workers (the master only supervises)."""
    assert len(answers) == workers, answers
    for pid, loops in answers.items():
        assert loops == {"ferroloop._loop"}, (pid, loops)
    if workers > 1:
        assert server.proc.pid not in answers


# ----------------------------------------------------------------------------------- uvicorn


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_uvicorn_cli_under_runner(app_dir, loop):
    need("uvicorn")
    need("uvloop")  # so that --loop auto would pick uvloop if nothing replaced it
    port = free_port()
    argv = [*RUNNER, "-m", "uvicorn", "app:app", "--port", str(port), "--workers", "2"]
    with serving([*argv, "--loop", loop], cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(2), 2, server)
    assert NOTICE not in server.err.read_text()


def test_uvicorn_explicit_uvloop_replaced_under_runner(app_dir):
    need("uvicorn")
    need("uvloop")
    port = free_port()
    argv = [*RUNNER, "-m", "uvicorn", "app:app", "--port", str(port), "--loop", "uvloop"]
    with serving(argv, cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(1), 1, server)
    notices = [line for line in server.err.read_text().splitlines() if line.startswith(NOTICE)]
    assert notices == [
        "ferroloop: uvloop.new_event_loop replaced by ferroloop (FERROLOOP_INSTALL=1, as "
        "python -m ferroloop sets; FERROLOOP_INSTALL=defaults keeps uvloop)"
    ]


def test_uvicorn_explicit_uvloop_kept_with_defaults(app_dir):
    need("uvicorn")
    need("uvloop")
    port = free_port()
    argv = [*RUNNER, "-m", "uvicorn", "app:app", "--port", str(port), "--loop", "uvloop"]
    env = {"FERROLOOP_INSTALL": "defaults"}
    with serving(argv, cwd=app_dir, port=port, env=env) as server:
        (loops,) = server.answers_from(1).values()
    assert loops == {"uvloop"}
    assert NOTICE not in server.err.read_text()


def test_uvicorn_cli_loop_factory(app_dir):
    need("uvicorn")
    port = free_port()
    argv = [PYTHON, "-m", "uvicorn", "app:app", "--port", str(port), "--workers", "2"]
    with serving([*argv, "--loop", "ferroloop:new_event_loop"], cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(2), 2, server)


def test_uvicorn_run(app_dir):
    need("uvicorn")
    port = free_port()
    (app_dir / "serve.py").write_text(
        textwrap.dedent(
            f"""\
            import uvicorn

            if __name__ == "__main__":
                uvicorn.run(
                    "app:app", port={port}, workers=2, loop="ferroloop:new_event_loop"
                )
            """
        )
    )
    with serving([PYTHON, "serve.py"], cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(2), 2, server)


# ---------------------------------------------------------------------------------- gunicorn


@pytest.mark.parametrize("worker", ["UvicornWorker", "UvicornH11Worker"])
def test_gunicorn_with_ferroloop_worker_class(app_dir, worker):
    need("gunicorn")
    need("uvicorn_worker")
    port = free_port()
    argv = [PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
    argv += ["-k", f"ferroloop.uvicorn_worker.{worker}", "app:app"]
    with serving(argv, cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(2), 2, server)


def test_gunicorn_with_uvicorn_worker_under_runner(app_dir):
    need("gunicorn")
    need("uvicorn_worker")
    port = free_port()
    argv = [*RUNNER, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
    argv += ["-k", "uvicorn_worker.UvicornWorker", "app:app"]
    with serving(argv, cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(2), 2, server)


# --------------------------------------------------------------------------------- hypercorn


def test_hypercorn_under_runner(app_dir):
    need("hypercorn")
    port = free_port()
    argv = [*RUNNER, "-m", "hypercorn", "-k", "asyncio", "-w", "2", "-b", f"127.0.0.1:{port}"]
    with serving([*argv, "app:app"], cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(2), 2, server)


HYPERCORN_SERVE = """\
import ferroloop
from hypercorn.asyncio import serve
from hypercorn.config import Config

from app import app

if __name__ == "__main__":
    config = Config()
    config.bind = ["127.0.0.1:{port}"]
    ferroloop.run(serve(app, config))
"""


def test_hypercorn_serve_on_ferroloop_run(app_dir):
    need("hypercorn")
    port = free_port()
    (app_dir / "serve.py").write_text(HYPERCORN_SERVE.format(port=port))
    with serving([PYTHON, "serve.py"], cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(1), 1, server)


# ----------------------------------------------------------------------------------- granian

# granian starts its workers with the interpreter's default start method (fork up to 3.13,
# spawn where 3.14 defaults to forkserver); this launcher makes it spawn on every version.
GRANIAN_SPAWN = """\
import multiprocessing, sys

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    from granian.cli import cli

    sys.argv[0] = "granian"
    cli()
"""


@pytest.mark.parametrize(
    "start, loop", [("default", "auto"), ("spawn", "asyncio")], ids=["default-auto", "spawn"]
)
def test_granian_under_runner(app_dir, start, loop):
    need("granian")
    port = free_port()
    if start == "spawn":
        (app_dir / "granian_spawn.py").write_text(GRANIAN_SPAWN)
        argv = [*RUNNER, "granian_spawn.py"]
    else:
        argv = [*RUNNER, "-m", "granian"]
    argv += ["--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "2", "--loop", loop, "app:app"]
    with serving(argv, cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(2), 2, server)


# ------------------------------------------------------------------------------------ daphne


def test_daphne_under_runner(app_dir):
    need("daphne")
    port = free_port()
    argv = [*RUNNER, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "app:app"]
    with serving(argv, cwd=app_dir, port=port) as server:
        assert_all_ferroloop(server.answers_from(1), 1, server)


# ----------------------------------------------------------------------------------- aiohttp

AIOHTTP_APP = """\
import asyncio, os, sys
from aiohttp import web


async def handler(request):
    loop = type(asyncio.get_running_loop()).__module__
    return web.json_response({{"loop": loop, "pid": os.getpid()}})


app = web.Application()
app.router.add_get("/", handler)

if __name__ == "__main__":
    {run}
"""


@pytest.mark.parametrize("how", ["loop-argument", "runner"])
def test_aiohttp(tmp_path, how):
    need("aiohttp")
    port = free_port()
    if how == "runner":
        run = f'web.run_app(app, host="127.0.0.1", port={port}, print=None)'
        argv = [*RUNNER, "serve.py"]
    else:
        run = (
            "import ferroloop\n    "
            f'web.run_app(app, host="127.0.0.1", port={port}, print=None, '
            "loop=ferroloop.new_event_loop())"
        )
        argv = [PYTHON, "serve.py"]
    (tmp_path / "serve.py").write_text(AIOHTTP_APP.format(run=run))
    with serving(argv, cwd=tmp_path, port=port) as server:
        assert_all_ferroloop(server.answers_from(1), 1, server)


# ------------------------------------------------------------------ pytest-asyncio and anyio

# The test body records the loop it ran on; the outer test reads it back.
TEST_BODY = """\
import asyncio, os

import pytest


{mark}
async def test_body():
    with open(os.environ["LOOP_FILE"], "w") as f:
        f.write(type(asyncio.get_running_loop()).__module__)
"""

PYTEST_ASYNCIO_CONFTEST = """\
import ferroloop
import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config, item):
    return {"ferroloop": ferroloop.new_event_loop}
"""

ANYIO_CONFTEST = """\
import ferroloop
import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio", {"loop_factory": ferroloop.new_event_loop}
"""


def run_pytest(tmp_path, prefix, conftest, mark):
    """pytest on one async test in its own directory (its own rootdir, so none of this suite's
    configuration); returns the loop module the body ran on."""
    ini = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(ini)
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_recipe.py").write_text(TEST_BODY.format(mark=mark))
    loop_file = tmp_path / "loop.txt"
    proc = subprocess.run(
        [*prefix, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_recipe.py"],
        cwd=tmp_path,
        env=child_env({"LOOP_FILE": str(loop_file)}),
        capture_output=True,
        text=True,
        timeout=40,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout, proc.stdout
    return loop_file.read_text()


def test_pytest_asyncio_loop_factories_hook(tmp_path):
    need("pytest_asyncio")
    loop = run_pytest(tmp_path, [PYTHON], PYTEST_ASYNCIO_CONFTEST, "@pytest.mark.asyncio")
    assert loop == "ferroloop._loop"


def test_pytest_asyncio_under_runner(tmp_path):
    need("pytest_asyncio")
    loop = run_pytest(tmp_path, RUNNER, "", "@pytest.mark.asyncio")
    assert loop == "ferroloop._loop"


def test_anyio_run_backend_options(run_python):
    need("anyio")
    code = textwrap.dedent(
        """\
        import asyncio, anyio, ferroloop

        async def main():
            return type(asyncio.get_running_loop()).__module__

        print(anyio.run(main, backend_options={"loop_factory": ferroloop.new_event_loop}))
        """
    )
    proc = run_python([PYTHON, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ferroloop._loop"


def test_anyio_backend_loop_factory(tmp_path):
    need("anyio")
    loop = run_pytest(tmp_path, [PYTHON], ANYIO_CONFTEST, "@pytest.mark.anyio")
    assert loop == "ferroloop._loop"
