# One target per habit. `make test` is what CI runs (through .ci/run).
PYTHON ?= python3

.PHONY: test test-types test-rust test-python test-fuzz fuzz test-wheel test-conformance \
	test-pythons test-dbg lint format docs bench demo wheels profiling-build

test: lint test-types test-rust test-python test-fuzz test-wheel test-conformance test-pythons test-dbg

# The stubs against the installed module (stubtest; every allowed difference has its reason in
# tests/types/stubtest-allowlist.txt), and examples/ under mypy --strict and pyright strict
# (against the stubs in python/). Installs its checkers (tests/types/tools.txt) into $(PYTHON).
TYPES = tests/types
test-types:
	$(PYTHON) -m pip install -q --disable-pip-version-check -r $(TYPES)/tools.txt
	$(PYTHON) $(TYPES)/loop_stub.py --check
	$(PYTHON) -m mypy.stubtest ferroloop --mypy-config-file $(TYPES)/mypy.ini \
		--allowlist $(TYPES)/stubtest-allowlist.txt
	$(PYTHON) -m mypy --strict --config-file $(TYPES)/mypy.ini examples/ python/ferroloop/*.pyi
	$(PYTHON) -m pyright -p $(TYPES)/pyrightconfig.json

test-rust:
	cargo test -p ferroloop-core

# The servers of tests/test_servers.py come with the test extra: missing, they fail the run.
test-python:
	FERROLOOP_REQUIRE_SERVERS=1 $(PYTHON) -m pytest tests --ignore=tests/conformance -q -rs -p no:cacheprovider

# One release wheel for $(PYTHON), as users get it: its manylinux tag checked by auditwheel, the
# extension's size (< 2 MB) and the licenses inside, then installed into a fresh venv and
# smoke-tested (import, a coroutine, a timer, a TCP echo). Installs its own tools (maturin,
# ziglang, auditwheel) into a build venv. See tests/wheel/.
test-wheel:
	bash tests/wheel/build.sh $(PYTHON) dist

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

# Release wheels for CPython 3.11 to 3.15 into dist/, each checked and smoke-tested as in
# test-wheel (3.12/3.13 from pyenv, 3.14/3.15 built inside tests/pythons.sh's chroot).
wheels:
	bash tests/pythons.sh 3.11 3.12 3.13 3.14 3.15 --wheel

# README's "Known differences" section is docs/differences.md (tests/test_docs.py checks it).
docs:
	$(PYTHON) tests/test_docs.py --write

bench:
	$(PYTHON) bench/run.py

# ferroloop built with Cargo.toml's profiling profile (release code plus line tables) into
# $(PYTHON): what bench/overhead.py and bench/callgrind.sh measure.
profiling-build:
	$(PYTHON) bench/profiling.py --install

demo:
	$(PYTHON) examples/demo.py
