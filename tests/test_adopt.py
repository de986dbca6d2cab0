"""How far ``python -m ferroloop`` reaches: child processes (multiprocessing's three start
methods, new interpreters), a program's explicit request for uvloop, the FERROLOOP_INSTALL
modes, and the start-up hook that carries it into new interpreters (inert without the variable).

Where a behaviour has a twin, the "asyncio" id runs the same program as plain ``python``, which
is what ``python -m ferroloop`` replaces.
"""

from __future__ import annotations

import json
import sys
import textwrap
import zipfile

import pytest
from server_helpers import need

pytestmark = pytest.mark.timeout(60)

PYTHON = sys.executable
RUNNER = [PYTHON, "-m", "ferroloop"]

LOOP_OF = textwrap.dedent(
    """\
    import asyncio, json, multiprocessing, subprocess, sys


    async def loop_module():
        return type(asyncio.get_running_loop()).__module__


    def child(queue):
        queue.put(asyncio.run(loop_module()))


    NEW_INTERPRETER = (
        "import asyncio\\n"
        "async def m():\\n"
        "    return type(asyncio.get_running_loop()).__module__\\n"
        "print(asyncio.run(m()))\\n"
    )
    """
)

WORKERS = LOOP_OF + textwrap.dedent(
    """\

    if __name__ == "__main__":
        out = {"main": asyncio.run(loop_module())}
        for method in ("fork", "spawn", "forkserver"):
            ctx = multiprocessing.get_context(method)
            queue = ctx.Queue()
            proc = ctx.Process(target=child, args=(queue,))
            proc.start()
            out[method] = queue.get(timeout=30)
            proc.join()
        out["interpreter"] = subprocess.run(
            [sys.executable, "-c", NEW_INTERPRETER], capture_output=True, text=True, check=True
        ).stdout.strip()
        print(json.dumps(out))
    """
)

UVLOOP_REQUESTS = LOOP_OF + textwrap.dedent(
    """\
    import uvloop

    if __name__ == "__main__":
        out = {"uvloop.run": uvloop.run(loop_module())}
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            out["loop_factory"] = runner.run(loop_module())
        if sys.version_info < (3, 16):
            uvloop.install()
            out["install"] = asyncio.run(loop_module())
        print(json.dumps(out))
    """
)


def top(module: str) -> str:
    return module.split(".")[0]


def run_json(run_python, argv, cwd, env=None):
    proc = run_python(argv, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ferroloop: ")]


def test_workers_and_new_interpreters_follow(flavor, run_python, tmp_path):
    (tmp_path / "prog.py").write_text(WORKERS)
    out, _ = run_json(run_python, [*flavor.main_prefix, "prog.py"], tmp_path)
    assert {where: top(module) for where, module in out.items()} == dict.fromkeys(
        ["main", "fork", "spawn", "forkserver", "interpreter"], flavor.module
    )


def test_workers_follow_defaults_mode(run_python, tmp_path):
    (tmp_path / "prog.py").write_text(WORKERS)
    out, _ = run_json(
        run_python, [*RUNNER, "prog.py"], tmp_path, env={"FERROLOOP_INSTALL": "defaults"}
    )
    assert set(map(top, out.values())) == {"ferroloop"}


def test_mode_0_keeps_ferroloop_to_the_runners_process(run_python, tmp_path):
    (tmp_path / "prog.py").write_text(WORKERS)
    out, _ = run_json(run_python, [*RUNNER, "prog.py"], tmp_path, env={"FERROLOOP_INSTALL": "0"})
    # A forked child is a copy of the runner's process; the others start afresh.
    assert {where: top(module) for where, module in out.items()} == {
        "main": "ferroloop",
        "fork": "ferroloop",
        "spawn": "asyncio",
        "forkserver": "asyncio",
        "interpreter": "asyncio",
    }


def test_explicit_uvloop_requests_replaced(flavor, run_python, tmp_path):
    need("uvloop")
    (tmp_path / "prog.py").write_text(UVLOOP_REQUESTS)
    out, stderr = run_json(run_python, [*flavor.main_prefix, "prog.py"], tmp_path)
    expected = "ferroloop" if flavor.name == "ferroloop" else "uvloop"
    assert set(map(top, out.values())) == {expected}, out
    if flavor.name == "ferroloop":
        # Once per process, whatever the number of requests.
        assert notices(stderr) == [
            "ferroloop: uvloop.run replaced by ferroloop (FERROLOOP_INSTALL=1, as python -m "
            "ferroloop sets; FERROLOOP_INSTALL=defaults keeps uvloop)"
        ]
    else:
        assert notices(stderr) == []


def test_explicit_uvloop_requests_kept_in_defaults_mode(run_python, tmp_path):
    need("uvloop")
    (tmp_path / "prog.py").write_text(UVLOOP_REQUESTS)
    out, stderr = run_json(
        run_python, [*RUNNER, "prog.py"], tmp_path, env={"FERROLOOP_INSTALL": "defaults"}
    )
    assert set(map(top, out.values())) == {"uvloop"}, out
    assert notices(stderr) == []


def test_uvloop_policy_replaced(run_python, tmp_path):
    need("uvloop")
    code = textwrap.dedent(
        """\
        import uvloop

        policy = uvloop.EventLoopPolicy()
        loop = policy.new_event_loop()
        print(type(loop).__module__)
        loop.close()
        """
    )
    if sys.version_info >= (3, 16):
        pytest.skip("asyncio has no policies from 3.16 on, nor uvloop an EventLoopPolicy")
    (tmp_path / "prog.py").write_text(code)
    proc = run_python([*RUNNER, "prog.py"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert top(proc.stdout.strip()) == "ferroloop"
    assert len(notices(proc.stderr)) == 1
    assert "uvloop.EventLoopPolicy replaced by ferroloop" in proc.stderr


def test_runner_rejects_an_unknown_mode(run_python, tmp_path):
    (tmp_path / "prog.py").write_text("print('ran')\n")
    proc = run_python([*RUNNER, "prog.py"], cwd=tmp_path, env={"FERROLOOP_INSTALL": "yes"})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "FERROLOOP_INSTALL='yes' not understood (1, defaults or 0)" in proc.stderr


# ------------------------------------------------------------------------- the start-up hook

PROBE = (
    "import sys\n"
    "print(sorted(m for m in sys.modules if 'ferroloop' in m or m == 'asyncio'))\n"
    "print(any(type(f).__name__ == '_Watcher' for f in sys.meta_path))\n"
)


def test_hook_imports_nothing_without_the_variable(run_python):
    proc = run_python([PYTHON, "-c", PROBE])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "False"]
    assert proc.stderr == ""


@pytest.mark.parametrize("value", ["", "0"])
def test_hook_does_nothing_when_the_variable_says_no(run_python, value):
    # The .pth line only looks for the name (the cheapest test); the module reads the value.
    proc = run_python([PYTHON, "-c", PROBE], env={"FERROLOOP_INSTALL": value})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['_ferroloop_startup']", "False"]
    assert proc.stderr == ""


def test_hook_waits_for_asyncio(run_python):
    # Interpreter start-up imports neither asyncio nor ferroloop: only the hook's own module.
    proc = run_python([PYTHON, "-c", PROBE], env={"FERROLOOP_INSTALL": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['_ferroloop_startup']", "True"]


@pytest.mark.parametrize(
    "first_import",
    ["asyncio", "ferroloop", "uvloop", "asyncio.events"],
    ids=["asyncio", "ferroloop-first", "uvloop-first", "submodule-first"],
)
def test_hook_installs_ferroloop_whatever_comes_first(run_python, first_import):
    if first_import == "uvloop":
        need("uvloop")
    code = (
        f"import {first_import}\n"
        "import asyncio\n"
        "async def m():\n"
        "    return type(asyncio.get_running_loop()).__module__\n"
        "lp = asyncio.new_event_loop()\n"
        "print(asyncio.run(m()), type(lp).__module__)\n"
        "lp.close()\n"
    )
    proc = run_python([PYTHON, "-c", code], env={"FERROLOOP_INSTALL": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ferroloop._loop", "ferroloop._loop"]
    assert proc.stderr == ""


# A stand-in for rloop (another loop library the runner replaces), so that the test needs no
# rloop: its loop is asyncio's, which is not what a replaced request gives. It imports a module
# from where it was itself loaded while it runs, as packages do.
FAKE_RLOOP = """\
import asyncio

import other


def new_event_loop():
    return asyncio.SelectorEventLoop()
"""


@pytest.mark.parametrize("where", ["directory", "zip"])
def test_hook_replaces_a_loop_library_wherever_it_is_loaded_from(run_python, tmp_path, where):
    # From a directory a file loader made for the module runs it; from a zip archive, one
    # zipimporter loads every module in it (other.py too, in the middle of rloop's import) and
    # must be left as it is.
    if where == "zip":
        with zipfile.ZipFile(tmp_path / "libs.zip", "w") as archive:
            archive.writestr("rloop/__init__.py", FAKE_RLOOP)
            archive.writestr("other.py", "VALUE = 1\n")
        path = tmp_path / "libs.zip"
    else:
        (tmp_path / "libs" / "rloop").mkdir(parents=True)
        (tmp_path / "libs" / "rloop" / "__init__.py").write_text(FAKE_RLOOP)
        (tmp_path / "libs" / "other.py").write_text("VALUE = 1\n")
        path = tmp_path / "libs"
    code = (
        "import rloop, other\n"
        "loop = rloop.new_event_loop()\n"
        "print(type(loop).__module__, type(rloop.__loader__).__name__, other.VALUE)\n"
        "loop.close()\n"
    )
    proc = run_python([PYTHON, "-c", code], env={"FERROLOOP_INSTALL": "1", "PYTHONPATH": str(path)})
    assert proc.returncode == 0, proc.stderr
    module, loader, value = proc.stdout.split()
    assert (module, value) == ("ferroloop._loop", "1")
    assert loader == ("_Loader" if where == "zip" else "SourceFileLoader")
    assert notices(proc.stderr) == [
        "ferroloop: rloop.new_event_loop replaced by ferroloop (FERROLOOP_INSTALL=1, as python -m "
        "ferroloop sets; FERROLOOP_INSTALL=defaults keeps rloop)"
    ]


def test_hook_ignores_an_unknown_mode_and_says_so(run_python):
    code = "import asyncio; lp = asyncio.new_event_loop(); print(type(lp).__module__); lp.close()"
    proc = run_python([PYTHON, "-c", code], env={"FERROLOOP_INSTALL": "yes"})
    assert proc.returncode == 0, proc.stderr
    assert top(proc.stdout.strip()) == "asyncio"
    # Once, though a venv's site-packages can be listed twice (lib and its lib64 symlink).
    assert proc.stderr.splitlines() == [
        "ferroloop: FERROLOOP_INSTALL='yes' not understood (1, defaults or 0); not installed"
    ]


def test_every_watched_module_has_a_patch():
    import _ferroloop_startup
    from ferroloop import _adopt

    assert set(_ferroloop_startup.WATCHED) == set(_adopt._PATCHES)


# ------------------------------------------------------------------------ the runner's words


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_says_what_it_does(run_python, flag):
    proc = run_python([*RUNNER, flag])
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m ferroloop [--stats] script.py")
    for words in (
        "uvicorn --loop auto",
        "hypercorn -k asyncio",
        "granian",
        "daphne",
        "multiprocessing's spawn and forkserver",
        "--stats prints a summary",
        "FERROLOOP_STATS=1",
        "FERROLOOP_INSTALL=defaults",
        "FERROLOOP_INSTALL=0",
        "one line on stderr",
    ):
        assert words in proc.stdout


def test_version(run_python):
    import ferroloop

    proc = run_python([*RUNNER, "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["ferroloop", ferroloop.__version__]
    assert f"Python {sys.version.split()[0]}" in proc.stdout


def test_no_arguments_is_a_usage_error(run_python):
    proc = run_python(RUNNER)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: python -m ferroloop")


# ------------------------------------------------------------------------ the gunicorn worker


def test_uvicorn_worker_module_needs_uvicorn_only_when_used(run_python):
    code = textwrap.dedent(
        """\
        import sys
        for name in ("uvicorn", "uvicorn_worker", "gunicorn"):
            sys.modules[name] = None  # as if not installed
        import ferroloop.uvicorn_worker as workers
        print(sorted(workers.__all__))
        try:
            workers.UvicornWorker
        except ImportError as exc:
            print(type(exc).__name__, exc.name)
        """
    )
    proc = run_python([PYTHON, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "['UvicornH11Worker', 'UvicornWorker']",
        "ModuleNotFoundError uvicorn",
    ]


def test_uvicorn_worker_class(run_python):
    need("uvicorn_worker")
    code = textwrap.dedent(
        """\
        import uvicorn_worker
        from ferroloop.uvicorn_worker import UvicornH11Worker, UvicornWorker
        for cls in (UvicornWorker, UvicornH11Worker):
            base = getattr(uvicorn_worker, cls.__name__)
            print(cls.__module__, issubclass(cls, base), cls.CONFIG_KWARGS)
        """
    )
    proc = run_python([PYTHON, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "ferroloop.uvicorn_worker True {'loop': 'ferroloop:new_event_loop', 'http': 'auto'}",
        "ferroloop.uvicorn_worker True {'loop': 'ferroloop:new_event_loop', 'http': 'h11'}",
    ]
