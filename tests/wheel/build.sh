#!/usr/bin/env bash
# Build a release wheel for one Python, check it (tests/wheel/check.py), install it into a fresh
# venv and smoke-test it there (tests/wheel/smoke.py).
#
#   tests/wheel/build.sh PYTHON OUT_DIR     # e.g. tests/wheel/build.sh python3 dist
#
# `make test-wheel` (CI) runs this for the python3 that ran pip; `make wheels` runs it for every
# supported Python through `tests/pythons.sh --wheel` (3.14/3.15 inside its chroot).
#
# The wheel is linked by `maturin --zig` against glibc 2.17's symbol versions
# (manylinux_2_17, i.e. manylinux2014): a native build on this Debian 12 host would import
# pthread_key_create@GLIBC_2.34 and be refused by glibc < 2.34 (RHEL 8/9, Ubuntu 20.04).
# The tools come from tests/wheel/tools.txt, pip-installed into a build venv next to the venvs
# of tests/pythons.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
project=$(pwd)

if [[ $# -ne 2 ]]; then
    echo "usage: $0 PYTHON OUT_DIR" >&2
    exit 2
fi
py=$1
mkdir -p "$2"
out=$(cd "$2" && pwd)

tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
tools=${TMPDIR:-/tmp}/ferroloop-wheel-tools-$tag
smoke=${TMPDIR:-/tmp}/ferroloop-wheel-smoke-$tag

step_start=0
step() {
    step_start=$SECONDS
    echo "wheel $tag: $*"
}
done_step() { echo "wheel $tag:   done in $((SECONDS - step_start)) s"; }

# Kept between runs while tools.txt and the interpreter are the same (ziglang alone is a
# 50 MB download and half a minute to unpack).
stamp="$("$py" -c 'import sys; print(sys.version)') $(cksum <tests/wheel/tools.txt)"
if [[ -f $tools/.stamp && $(cat "$tools/.stamp") == "$stamp" ]]; then
    echo "wheel $tag: build tools already in $tools"
else
    step "installing the build tools (tests/wheel/tools.txt) into $tools"
    "$py" -m venv --clear "$tools"
    "$tools/bin/pip" install -q --disable-pip-version-check -r tests/wheel/tools.txt
    echo "$stamp" >"$tools/.stamp"
    done_step
fi

# maturin looks for `python -m ziglang` on PATH: the build venv's.
step "building the release wheel (maturin --zig, manylinux_2_17; the fat-LTO build takes ~1 min)"
rm -f "$out"/ferroloop-*-"$tag"-*.whl
PATH="$tools/bin:$PATH" "$tools/bin/maturin" build --quiet --release --zig \
    --compatibility manylinux2014 --interpreter "$py" --out "$out"
wheel=$(ls "$out"/ferroloop-*-"$tag"-*.whl)
done_step

step "checking $(basename "$wheel")"
"$tools/bin/python" tests/wheel/check.py "$wheel"
done_step

step "installing it into a fresh venv ($smoke) and running tests/wheel/smoke.py"
# Without pip of its own (bootstrapping one takes longer than the rest): the build venv's pip
# installs into it.
"$py" -m venv --clear --without-pip "$smoke"
"$tools/bin/pip" --python "$smoke/bin/python" install -q --disable-pip-version-check \
    --no-index --no-deps "$wheel"
# From / so that nothing but the installed wheel can be imported as ferroloop.
(cd / && "$smoke/bin/python" "$project/tests/wheel/smoke.py")
done_step
