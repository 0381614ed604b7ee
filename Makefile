# The README's two commands: `make demo` and `make test`. Both create .venv on first use and are fast after.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed explicitly first: pinned, it comes from the CPU wheel on local disk; left to the
# resolver, plain `torch` would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/medseg demo

# pytest exits 5 when it collects no tests; that is not a failure of the code under test.
# The browser tests drive Debian's chromium (never `playwright install`): installed here when missing and
# apt-get can, otherwise those tests are skipped with the reason.
test: $(VENV)/.installed-dev
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the browser tests (apt-get)"; \
		{ apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } \
			>/dev/null 2>&1 || echo "could not install chromium; the browser tests will be skipped"; \
	fi
	$(BIN)/python -m pytest -q; status=$$?; if [ $$status -eq 5 ]; then status=0; fi; exit $$status

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/train_step.py

clean-venv:
	rm -rf $(VENV)
