# Two entry points for a fresh machine (see README.md):
#   make demo   install into .venv, then run the whole pipeline on the bundled synthetic example
#   make test   install into .venv, then run the test suite
# The CPU build of torch is pinned first so that nothing pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: install demo test lint bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e '.[dev]'
	touch $@

demo: install
	$(BIN)/scail demo scail-demo

# pytest exits 5 when it collected no test at all; that is reported, not hidden.
test: install
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; fi; exit $$rc

lint: install
	$(BIN)/ruff check scail tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_status.py
