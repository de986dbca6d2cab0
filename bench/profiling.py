"""Is the ferroloop this Python imports the profiling build?

    python bench/profiling.py             # exit 0 if it is; 1, saying how to get it, if not
    python bench/profiling.py --install   # build it and install it into this Python

Release builds (what the wheels and `pip install .` give) carry no debug info. The `profiling`
profile of Cargo.toml is the same code with line tables, so `callgrind_annotate` and `perf`
can attribute instructions to source lines. bench/overhead.py and bench/callgrind.sh measure
ferroloop only in that build (instruction counts are the release build's: same code
generation), unless told otherwise (`--any-build`, `ANY_BUILD=1`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def extension_path() -> Path | None:
    try:
        spec = importlib.util.find_spec("ferroloop._ferroloop")
    except ModuleNotFoundError:  # no ferroloop package at all
        return None
    return Path(spec.origin) if spec and spec.origin else None


def section_names(path: Path) -> list[str]:
    """Section names of a little-endian ELF64 file (all ferroloop builds for x86_64 Linux)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{path} is not an ELF64 file")
    shoff, shentsize, shnum, shstrndx = (
        struct.unpack_from("<Q", data, 0x28)[0],
        *struct.unpack_from("<HHH", data, 0x3A),
    )
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = headers[shstrndx][4]
    names = []
    for name_off, *_ in headers:
        start = strtab_off + name_off
        names.append(data[start : data.index(b"\0", start)].decode())
    return names


def is_profiling_build(path: Path) -> bool:
    return ".debug_line" in section_names(path)


def check() -> str | None:
    """None when this Python's ferroloop is the profiling build, else why not and what to do."""
    path = extension_path()
    if path is None:
        return f"ferroloop is not installed in {sys.executable}"
    if is_profiling_build(path):
        return None
    return (
        f"{path} is a release build (no line tables: callgrind_annotate cannot attribute costs"
        f" to source lines). Install the profiling build into this Python first:\n"
        f"    python bench/profiling.py --install    (or: make profiling-build"
        f" PYTHON={sys.executable})"
    )


def install() -> int:
    # maturin's PEP 517 backend takes extra `maturin build` arguments from this variable.
    env = {**os.environ, "MATURIN_PEP517_ARGS": "--profile profiling"}
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--force-reinstall",
        "--no-deps",
        str(ROOT),
    ]
    print(f"profiling: building ferroloop with the profiling profile ({' '.join(cmd)})")
    return subprocess.run(cmd, env=env, check=False).returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--install", action="store_true", help="build and install the profiling build")
    args = p.parse_args()
    if args.install and install() != 0:
        return 1
    # Nothing imported ferroloop before the install, so this sees the build just installed.
    problem = check()
    if problem:
        print(f"profiling: {problem}", file=sys.stderr)
        return 1
    print(f"profiling: {extension_path()} is the profiling build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
