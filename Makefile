# The two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0

.PHONY: demo test install lint typecheck pytest docs bench clean

# Two stamps in one venv: `make demo` installs only what the offline demo runs on
# (torch + the [local,server] extras, about 1 GB less than [dev]); `make test`
# later adds the test and docs toolchain on top.
$(PY):
	@echo "==> Creating the virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: a CPU wheel is on disk on our machines; nothing pulls CUDA packages.
$(VENV)/.torch: | $(PY)
	@echo "==> Installing $(TORCH) (the largest download, about 190 MB)"
	$(PIP) install --no-compile --progress-bar on $(TORCH)
	touch $@

# constraints.txt pins the versions the test suite was last run with (regenerate with pip freeze).
$(VENV)/.demo-installed: pyproject.toml constraints.txt | $(VENV)/.torch
	@echo "==> Installing llava-bridge with the [local,server] extras (transformers, fastapi, uvicorn)"
	$(PIP) install --no-compile --progress-bar on -c constraints.txt -e '.[local,server]'
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/.torch
	@echo "==> Installing llava-bridge with the [dev] extras (tests, linters, docs)"
	$(PIP) install --no-compile --progress-bar on -c constraints.txt -e '.[dev]'
	touch $@

# fal's JavaScript client, for tests/server/test_js_client.py (skipped where Node.js is missing).
JS_CLIENT := tests/server/js/node_modules/.package-lock.json
$(JS_CLIENT): tests/server/js/package.json tests/server/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		echo "==> Installing fal's JavaScript client for the tests (npm ci)"; \
		npm ci --prefix tests/server/js --no-audit --no-fund; \
	else echo "==> npm not found: the JavaScript client test will be skipped"; fi

install: $(VENV)/.installed

demo: $(VENV)/.demo-installed
	@echo "==> Running the demo"
	$(VENV)/bin/llava-bridge demo
	@echo
	@echo "Next, try:"
	@echo "  FAL_KEY=... $(VENV)/bin/llava-bridge ask photo.jpg 'What is in this picture?'    # LLaVA on fal"
	@echo "  $(VENV)/bin/llava-bridge serve    # a fal-compatible server on 127.0.0.1:8000 (fake answers), then in another shell:"
	@echo "  LLAVA_FAL_BASE_URL=http://127.0.0.1:8000 $(VENV)/bin/llava-bridge ask photo.jpg 'What is this?'"
	@echo "  make test    # adds the test and docs toolchain, then runs lint, types, tests and docs"

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src

typecheck: install
	$(VENV)/bin/mypy --strict src

pytest: install $(JS_CLIENT)
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
