# `make demo` and `make test` create the environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned first: a CPU build; an unpinned torch would pull several GB of CUDA packages.
	$(PY) -m pip install -q "torch==2.13.0" "torchvision==0.28.0"
	$(PY) -m pip install -q -e ".[dev,eval,docs]"
	touch $@

.PHONY: demo test test-fast lint bench fuzz docs wheel
demo: $(VENV)/.installed
	$(VENV)/bin/vtok demo --out vtok-demo

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The suite without the tests marked slow (multi-process runs, trainings, Frechet distances of 2048-d features).
test-fast: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The documentation site in site/: every page, the generated CLI and config reference, warnings as errors.
docs: $(VENV)/.installed
	HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_vq.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_eval.py

fuzz: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) benchmarks/fuzz.py --seconds 300

# dist/vtok-VERSION-py3-none-any.whl, presets and fine-tune overlays included; built offline by the venv's
# setuptools, from a clean build/ (setuptools would otherwise ship stale files left there).
wheel: $(VENV)/.installed
	rm -rf build dist/vtok-*.whl
	$(PY) -m pip wheel -q --no-deps --no-build-isolation --no-index --wheel-dir dist .
	@ls dist/vtok-*.whl
