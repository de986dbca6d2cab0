# One target per habit. `make test` is what CI runs (through .ci/run).
PYTHON ?= python3

.PHONY: test test-rust test-python test-conformance test-pythons test-dbg lint format bench demo

test: lint test-rust test-python test-conformance test-pythons test-dbg

test-rust:
	cargo test -p ferroloop-core

# The servers of tests/test_servers.py come with the test extra: missing, they fail the run.
test-python:
	FERROLOOP_REQUIRE_SERVERS=1 $(PYTHON) -m pytest tests --ignore=tests/conformance -q -rs -p no:cacheprovider

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

demo:
	$(PYTHON) examples/demo.py
