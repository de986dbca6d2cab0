# One target per habit. `make test` is what CI runs (through .ci/run).
PYTHON ?= python3

.PHONY: test test-rust test-python test-conformance lint format bench demo

test: lint test-rust test-python test-conformance

test-rust:
	cargo test -p ferroloop-core

test-python:
	$(PYTHON) -m pytest tests --ignore=tests/conformance -q -p no:cacheprovider

test-conformance:
	$(PYTHON) tests/conformance/run.py

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
