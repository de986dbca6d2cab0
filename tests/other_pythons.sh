#!/usr/bin/env bash
# The pytest suite on the other CPython versions this machine has besides the main one (CI runs
# the full `make test` on python3). ferroloop supports 3.11+; the interpreters are looked up
# under pyenv, then as python3.X on PATH. A version the machine lacks is reported and skipped: the
# machine image only promises 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for version in 3.12 3.13; do
    py=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python 2>/dev/null | tail -n 1 || true)
    if [[ -z $py ]]; then
        py=$(command -v "python$version" || true)
    fi
    # A pyenv shim for a version that is not selected exists but does not run.
    if [[ -z $py ]] || ! "$py" -c "" 2>/dev/null; then
        echo "other pythons: no Python $version on this machine, not tested"
        continue
    fi
    venv=${TMPDIR:-/tmp}/ferroloop-venv-$version
    echo "other pythons: Python $version ($py)"
    "$py" -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check . pytest pytest-timeout
    if ! "$venv/bin/python" -m pytest tests --ignore=tests/conformance -q -p no:cacheprovider; then
        status=1
    fi
done
exit $status
