# One target per habit. `make test` is what CI runs (through .ci/run).
PYTHON ?= python3

.PHONY: test test-rust test-python test-fuzz fuzz test-conformance test-pythons test-dbg lint format docs bench demo

test: lint test-rust test-python test-fuzz test-conformance test-pythons test-dbg

test-rust:
	cargo test -p ferroloop-core

test-python:
	$(PYTHON) -m pytest tests --ignore=tests/conformance -q -p no:cacheprovider

# Both fuzzers (tests/fuzz/), bounded to about a minute and a half on 2 cores: fixed seeds, plus
# fresh ones printed for reproduction. A crash, panic, hang, leaked fd or a difference from the
# stock loop not listed in docs/differences.md or tests/fuzz/pending.txt fails, with the command
# that reproduces it.
FUZZ_SEEDS ?= 1-3
FUZZ_CASES ?= 400
SEQ_SEEDS ?= 1-40

test-fuzz:
	$(PYTHON) tests/fuzz/differential.py --seeds $(FUZZ_SEEDS) --cases $(FUZZ_CASES) --fresh 1
	$(PYTHON) tests/fuzz/sequences.py --seeds $(SEQ_SEEDS) --fresh 4

# The same, longer: fresh seeds for FUZZ_SECONDS (default 10 minutes), half for each fuzzer.
FUZZ_SECONDS ?= 600

fuzz:
	$(PYTHON) tests/fuzz/differential.py --seconds $$(( $(FUZZ_SECONDS) / 2 ))
	$(PYTHON) tests/fuzz/sequences.py --seconds $$(( $(FUZZ_SECONDS) / 2 ))

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

# README's "Known differences" section is docs/differences.md (tests/test_docs.py checks it).
docs:
	$(PYTHON) tests/test_docs.py --write

bench:
	$(PYTHON) bench/run.py

demo:
	$(PYTHON) examples/demo.py
