"""Check a built ferroloop wheel before anyone installs it.

    python tests/wheel/check.py dist/ferroloop-0.1.0-cp311-cp311-manylinux_2_17_x86_64...whl

Runs in tests/wheel/build.sh's build venv (auditwheel and its pyelftools are there). Fails when:
- the platform tag allows only a glibc newer than --max-glibc (default 2.17: what `maturin --zig
  --compatibility manylinux2014` gives; 2.28 would still install on every current LTS), or
  auditwheel, reading the symbol versions the extension really imports, disagrees with the tag;
- the extension is larger than --max-so-bytes (default 2 MB) or carries DWARF sections (the
  release profile has no debug info; the profiling profile is for benchmarks only);
- the licenses pyproject.toml names, the type stubs or py.typed are missing.
Prints one line with the tag and sizes when all is well.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

LICENSES = ("LICENSE-MIT", "LICENSE-APACHE")
LICENSE_EXPRESSION = "MIT OR Apache-2.0"
TYPED = ("ferroloop/py.typed", "ferroloop/__init__.pyi", "ferroloop/_ferroloop.pyi")


def glibc_of(tag: str) -> tuple[int, int] | None:
    """(2, 17) for manylinux_2_17_x86_64 and its legacy alias manylinux2014_x86_64."""
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", tag)
    if m:
        return int(m[1]), int(m[2])
    return legacy.get(tag.split("_", 1)[0])


def auditwheel_tag(wheel: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # auditwheel wraps its prose; the tag is the first quoted one after "platform tag:".
    m = re.search(r'consistent\s+with\s+the\s+following\s+platform\s+tag:\s+"([^"]+)"', out)
    if not m:
        raise SystemExit(f"check: cannot read auditwheel's verdict:\n{out}")
    return m[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheel", type=Path)
    p.add_argument("--max-glibc", default="2.17", help="newest glibc the tag may require")
    p.add_argument("--max-so-bytes", type=int, default=2_000_000)
    args = p.parse_args()
    wheel: Path = args.wheel
    problems: list[str] = []

    max_glibc = tuple(int(x) for x in args.max_glibc.split("."))
    platform_tags = wheel.name.removesuffix(".whl").split("-")[-1].split(".")
    glibcs = sorted(g for g in map(glibc_of, platform_tags) if g is not None)
    if not glibcs:
        problems.append(f"no manylinux tag in {platform_tags}")
    elif glibcs[0] > max_glibc:
        problems.append(f"tag {platform_tags} needs glibc {glibcs[0]}, newer than {max_glibc}")
    audited = auditwheel_tag(wheel)
    if audited not in platform_tags and glibc_of(audited) not in glibcs:
        problems.append(f"auditwheel says {audited}, the file name says {platform_tags}")

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        sos = [i for i in zf.infolist() if i.filename.endswith(".so")]
        if len(sos) != 1:
            problems.append(f"expected one extension module, found {[i.filename for i in sos]}")
        so_size = sos[0].file_size if sos else 0
        if so_size >= args.max_so_bytes:
            problems.append(f"{sos[0].filename} is {so_size:,} bytes (limit {args.max_so_bytes:,})")
        if sos:
            with tempfile.TemporaryDirectory() as tmp:
                so = Path(zf.extract(sos[0], tmp))
                with so.open("rb") as f:
                    debug = [
                        s.name for s in ELFFile(f).iter_sections() if s.name.startswith(".debug")
                    ]
            if debug:
                problems.append(f"the extension carries debug sections {debug}")
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        for lic in LICENSES:
            if f"{dist_info}/licenses/{lic}" not in names:
                problems.append(f"{dist_info}/licenses/{lic} missing")
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        if f"License-Expression: {LICENSE_EXPRESSION}" not in metadata.splitlines():
            problems.append(f"METADATA has no 'License-Expression: {LICENSE_EXPRESSION}'")
        problems += [f"{t} missing" for t in TYPED if t not in names]

    if problems:
        for problem in problems:
            print(f"check: {wheel.name}: {problem}", file=sys.stderr)
        return 1
    print(
        f"check: {wheel.name}: {wheel.stat().st_size / 1e6:.2f} MB, extension"
        f" {so_size / 1e6:.2f} MB, auditwheel: {audited}, licenses and stubs inside"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
