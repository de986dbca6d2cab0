# One target per habit. `make test` is what CI runs (through .ci/run).
PYTHON ?= python3

.PHONY: test test-rust test-python test-conformance test-pythons test-dbg lint format bench demo \
	profiling-build

test: lint test-rust test-python test-conformance test-pythons test-dbg

test-rust:
	cargo test -p ferroloop-core

test-python:
	$(PYTHON) -m pytest tests --ignore=tests/conformance -q -p no:cacheprovider

test-conformance:
	$(PYTHON) tests/conformance/run.py

# The pytest suite on Python 3.12 and 3.13 (pyenv) and on 3.14 and 3.15 (Debian sid in a chroot,
# built on first use), and the conformance run on 3.14 and 3.15 (see tests/pythons.sh).
test-pythons:
	bash tests/pythons.sh

# The pytest suite on CPython 3.14's debug build (Py_DEBUG: refcount and GIL assertions).
test-dbg:
	bash tests/pythons.sh 3.14-dbg

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(PYTHON) -m ruff --version
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	cargo fmt --all
	$(PYTHON) -m ruff format .

bench:
	$(PYTHON) bench/run.py

# ferroloop built with Cargo.toml's profiling profile (release code plus line tables) into
# $(PYTHON): what bench/overhead.py and bench/callgrind.sh measure.
profiling-build:
	$(PYTHON) bench/profiling.py --install

demo:
	$(PYTHON) examples/demo.py
