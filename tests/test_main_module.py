"""``python -m ferroloop script.py [args]`` and ``python -m ferroloop -m module [args]``.

For the "asyncio" id the same programs run as plain ``python script.py`` /
``python -m module``, which is the behaviour ``python -m ferroloop`` mirrors.
"""

import json
import signal
import textwrap
import time

import pytest

pytestmark = pytest.mark.timeout(60)

PROBE = textwrap.dedent(
    """\
    import asyncio, json, sys

    async def main():
        return type(asyncio.get_running_loop()).__module__

    if __name__ == "__main__":
        info = {
            "name": __name__,
            "argv": sys.argv,
            "run": asyncio.run(main()),
        }
        lp = asyncio.new_event_loop()
        info["new_event_loop"] = type(lp).__module__
        lp.close()
        with asyncio.Runner() as runner:
            info["runner"] = runner.run(main())
        print(json.dumps(info))
    else:
        print("not main:", __name__)
    """
)


def script_cmd(flavor, script, *args):
    return [*flavor.main_prefix, str(script), *args]


def module_cmd(flavor, module, *args):
    return [*flavor.main_prefix, "-m", module, *args]


def top(module_name):
    return module_name.split(".")[0]


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


def parse_probe(proc):
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_script_runs_on_flavor_loop(flavor, run_python, workdir):
    script = workdir / "prog.py"
    script.write_text(PROBE)
    info = parse_probe(run_python(script_cmd(flavor, script, "a", "--b", "c d"), cwd=workdir))
    assert info["name"] == "__main__"
    assert top(info["run"]) == flavor.module
    assert top(info["new_event_loop"]) == flavor.module
    assert top(info["runner"]) == flavor.module
    assert info["argv"] == [str(script), "a", "--b", "c d"]


def test_script_relative_path_argv(flavor, run_python, workdir):
    (workdir / "prog.py").write_text(PROBE)
    info = parse_probe(run_python(script_cmd(flavor, "prog.py", "x"), cwd=workdir))
    assert info["argv"] == ["prog.py", "x"]
    assert top(info["run"]) == flavor.module


def test_module_runs_on_flavor_loop(flavor, run_python, workdir):
    pkg = workdir / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "probe.py").write_text(PROBE)
    info = parse_probe(run_python(module_cmd(flavor, "mypkg.probe", "1", "-x"), cwd=workdir))
    assert info["name"] == "__main__"
    assert top(info["run"]) == flavor.module
    assert top(info["new_event_loop"]) == flavor.module
    assert info["argv"] == [str(pkg / "probe.py"), "1", "-x"]


def test_package_main_module(flavor, run_python, workdir):
    pkg = workdir / "apppkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(PROBE)
    info = parse_probe(run_python(module_cmd(flavor, "apppkg", "arg"), cwd=workdir))
    assert info["name"] == "__main__"
    assert top(info["run"]) == flavor.module
    assert info["argv"] == [str(pkg / "__main__.py"), "arg"]


def test_name_main_guard_imported_module_not_main(flavor, run_python, workdir):
    # The helper imported by the script must not see __name__ == "__main__".
    (workdir / "helper.py").write_text("import sys\nNAME = __name__\n")
    script = workdir / "prog.py"
    script.write_text(
        "import helper\n"
        "print('helper:', helper.NAME)\n"
        "if __name__ == '__main__':\n"
        "    print('main guard ran')\n"
    )
    proc = run_python(script_cmd(flavor, script), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["helper: helper", "main guard ran"]


def test_script_directory_on_sys_path(flavor, run_python, tmp_path):
    # Like `python script.py`, the script's directory is importable even when
    # the current directory is elsewhere.
    src = tmp_path / "src"
    src.mkdir()
    (src / "sibling.py").write_text("VALUE = 'sibling ok'\n")
    (src / "prog.py").write_text("import sibling\nprint(sibling.VALUE)\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    proc = run_python(script_cmd(flavor, src / "prog.py"), cwd=other)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "sibling ok"


@pytest.mark.parametrize("code, expected", [(0, 0), (3, 3), (255, 255)])
def test_exit_code_propagated(flavor, run_python, workdir, code, expected):
    script = workdir / "prog.py"
    script.write_text(
        f"import asyncio, sys\nasync def main():\n    sys.exit({code})\nasyncio.run(main())\n"
    )
    proc = run_python(script_cmd(flavor, script), cwd=workdir)
    assert proc.returncode == expected, proc.stderr


def test_exit_with_message(flavor, run_python, workdir):
    script = workdir / "prog.py"
    script.write_text("import sys\nsys.exit('fatal: bye')\n")
    proc = run_python(script_cmd(flavor, script), cwd=workdir)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "fatal: bye"


def test_exit_code_from_module(flavor, run_python, workdir):
    (workdir / "exiter.py").write_text("import sys\nsys.exit(3)\n")
    proc = run_python(module_cmd(flavor, "exiter"), cwd=workdir)
    assert proc.returncode == 3, proc.stderr


def test_uncaught_exception(flavor, run_python, workdir):
    script = workdir / "prog.py"
    script.write_text(
        "import asyncio\n"
        "async def main():\n"
        "    raise ValueError('uncaught in main')\n"
        "asyncio.run(main())\n"
    )
    proc = run_python(script_cmd(flavor, script), cwd=workdir)
    assert proc.returncode == 1
    assert "Traceback (most recent call last):" in proc.stderr
    assert proc.stderr.rstrip().endswith("ValueError: uncaught in main")
    assert "prog.py" in proc.stderr


def test_uncaught_exception_in_module(flavor, run_python, workdir):
    (workdir / "failing.py").write_text("raise KeyError('mod')\n")
    proc = run_python(module_cmd(flavor, "failing"), cwd=workdir)
    assert proc.returncode == 1
    assert "Traceback (most recent call last):" in proc.stderr
    assert proc.stderr.rstrip().endswith("KeyError: 'mod'")


def test_missing_script(flavor, run_python, workdir):
    proc = run_python(script_cmd(flavor, workdir / "does_not_exist.py"), cwd=workdir)
    assert proc.returncode == 2  # as `python missing.py`
    assert "does_not_exist.py" in proc.stderr


def test_missing_module(flavor, run_python, workdir):
    proc = run_python(module_cmd(flavor, "no_such_module_xyz"), cwd=workdir)
    assert proc.returncode == 1  # as `python -m missing`
    assert "no_such_module_xyz" in proc.stderr


def test_stdin_stdout_passthrough(flavor, run_python, workdir):
    script = workdir / "prog.py"
    script.write_text(
        "import asyncio, sys\n"
        "async def main():\n"
        "    print('out line')\n"
        "    print('err line', file=sys.stderr)\n"
        "asyncio.run(main())\n"
    )
    proc = run_python(script_cmd(flavor, script), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "out line\n"
    assert "err line" in proc.stderr


def test_ctrl_c_under_main(flavor, spawn_python, workdir):
    script = workdir / "prog.py"
    script.write_text(
        "import asyncio\n"
        "async def main():\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )
    proc = spawn_python(script_cmd(flavor, script), cwd=workdir)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err


def test_main_module_env_unchanged(flavor, run_python, workdir):
    # The launcher must not leave visible traces in the program's environment.
    script = workdir / "prog.py"
    script.write_text(
        "import sys, os\n"
        "main = sys.modules['__main__']\n"
        "print(main.__file__ == os.path.abspath(sys.argv[0]) or main.__file__ == sys.argv[0])\n"
    )
    proc = run_python(script_cmd(flavor, script), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_spec_of_main(flavor, run_python, workdir):
    code = "import sys\nspec = sys.modules['__main__'].__spec__\nprint(spec and spec.name)\n"
    (workdir / "prog.py").write_text(code)
    (workdir / "specmod.py").write_text(code)
    proc = run_python(script_cmd(flavor, "prog.py"), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None"
    proc = run_python(module_cmd(flavor, "specmod"), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "specmod"


def test_new_event_loop_in_thread_uses_flavor(flavor, run_python, workdir):
    script = workdir / "prog.py"
    script.write_text(
        "import asyncio, threading\n"
        "out = []\n"
        "def worker():\n"
        "    async def main():\n"
        "        return type(asyncio.get_running_loop()).__module__\n"
        "    out.append(asyncio.run(main()))\n"
        "t = threading.Thread(target=worker)\n"
        "t.start(); t.join()\n"
        "print(out[0])\n"
    )
    proc = run_python(script_cmd(flavor, script), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert top(proc.stdout.strip()) == flavor.module


def test_pickle_class_defined_in_main(flavor, run_python, workdir):
    script = workdir / "prog.py"
    script.write_text(
        "import pickle\n"
        "class Point:\n"
        "    def __init__(self, x):\n"
        "        self.x = x\n"
        "p = pickle.loads(pickle.dumps(Point(5)))\n"
        "print(type(p).__module__, p.x)\n"
    )
    proc = run_python(script_cmd(flavor, script), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "__main__ 5"


def test_symlinked_script_directory_on_sys_path(flavor, run_python, tmp_path):
    # `python link.py` puts the directory of the symlink's *target* on sys.path.
    real = tmp_path / "real"
    real.mkdir()
    (real / "sibling.py").write_text("VALUE = 'found via target dir'\n")
    (real / "prog.py").write_text("import sibling\nprint(sibling.VALUE)\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "prog.py").symlink_to(real / "prog.py")
    proc = run_python(script_cmd(flavor, bindir / "prog.py"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "found via target dir"


def test_debug_flag_reaches_program(flavor, run_python, workdir):
    script = workdir / "prog.py"
    script.write_text(
        "import asyncio\n"
        "async def main():\n"
        "    print(asyncio.get_running_loop().get_debug())\n"
        "asyncio.run(main())\n"
    )
    cmd = script_cmd(flavor, script)
    proc = run_python([cmd[0], "-X", "dev", *cmd[1:]], cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
