# The two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0

.PHONY: demo test install lint typecheck pytest docs bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned: a CPU wheel is on disk on our machines; nothing pulls CUDA packages.
	$(PIP) install --quiet $(TORCH)
	# constraints.txt pins the versions the test suite was last run with (regenerate with pip freeze).
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/llava-bridge demo

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src

typecheck: install
	$(VENV)/bin/mypy --strict src

pytest: install
	$(PY) -m pytest -q

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict  # no --quiet: it hides the warnings strict counts

test: lint typecheck pytest docs

bench: install
	$(PY) bench/fal_overhead.py
	$(PY) bench/http_exchange.py
	$(PY) bench/local_backend.py
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
