# Everything a reader or CI needs: `make run`, `make test` (and later `make book`). Each sets up .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= tiny
OUT ?= artifacts/$(PROFILE)

.PHONY: help setup run test lint bench clean

help:
	@echo "make run    - run the whole study headless in the $(PROFILE) profile (results in $(OUT)/results)"
	@echo "make test   - run the test suite"
	@echo "make lint   - ruff"
	@echo "make bench  - print training/evaluation throughput, merge time and grid wall times"
	@echo "make clean  - remove artifacts and build outputs (keeps .venv)"

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e '.[dev,book]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m lora_merge_utils run --profile $(PROFILE) --out $(OUT)

test: setup
	$(PY) -m ruff check lora_merge_utils scripts benchmarks tests
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check lora_merge_utils scripts benchmarks tests

bench: setup
	$(PY) benchmarks/benchmark_grid.py

clean:
	rm -rf artifacts _build notebooks/student .pytest_cache
