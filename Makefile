# Two commands matter: `make demo` and `make test`. Both build everything they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUILT  := $(VENV)/.installed
STAMP  := $(VENV)/.installed-dev
LINTED := taskorbit tests benchmarks examples

.PHONY: demo test lint typecheck unit sanitize bench chaos services clean

# The package alone (the C ring built by pip): all that `make demo` needs.
$(BUILT): pyproject.toml setup.py csrc/ringbuf.c csrc/ringbuf.h csrc/ringbuf.cdef taskorbit/worker/_ringbuf_build.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $@

# The development tools, the brokers' client libraries and the test servers' Python parts.
$(STAMP): $(BUILT)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(BUILT)
	$(PY) examples/quickstart.py

services:
	./scripts/ensure-services

lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(PY) -m mypy

test: $(STAMP) services lint typecheck
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit tests/property

sanitize: $(STAMP)
	$(PY) -m pytest -m sanitize

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m pytest benchmarks --benchmark-only -q
	$(PY) benchmarks/run_e2e.py --suite all --repeat 3
	$(PY) benchmarks/plot.py

# 100 SIGKILLs over 5,000 messages per durable transport; the table of docs/reliability.md.
chaos: $(STAMP) services
	$(PY) benchmarks/chaos.py

clean:
	rm -rf $(VENV) build *.egg-info taskorbit/worker/_ringbuf*.so taskorbit/worker/_ringbuf.c
