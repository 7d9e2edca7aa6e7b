# The two README commands: `make run` (install, demo, serve) and `make test` (install, lint, tests).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_VERSION := 26.3
# A production-style virtual environment: the runtime lock only, no test tool.
RUNTIME_VENV ?= .venv-runtime

.PHONY: run test install install-runtime lock lint system-packages demo bench clean

$(STAMP): requirements/dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Everything `make run` and `make test` need: runtime and development packages (dev lock).
install: $(STAMP)

# `pip install .` with the runtime lock as constraints: what a production host gets.
install-runtime:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install --quiet pip==$(PIP_VERSION)
	rm -rf build  # setuptools builds in the tree: a stale build/lib would be installed too
	$(RUNTIME_VENV)/bin/python -m pip install --quiet -c requirements/runtime.txt .

# Regenerate both locks from pyproject.toml (keeps locked versions; see requirements/lock.sh).
lock:
	PYTHON=$(PYTHON) sh requirements/lock.sh

demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py load_demo

# With a Redis answering at 127.0.0.1:6379 the demo's shared state (acme's rate limit) is in
# it, shared by every worker; without one each worker counts for itself.
run: demo
	CHISTONE_REDIS_URL="$${CHISTONE_REDIS_URL:-$$(redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && echo redis://127.0.0.1:6379/0)}" \
		$(PY) manage.py serve --demo-backends

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Debian's Chromium (the browser test) and nginx (the differential suite), installed with
# apt-get when running as root, otherwise a failure naming the command; wrk and nginx's Lua
# module for the benchmark harness when they can be installed.
system-packages:
	@sh tests/system_packages.sh

test: install system-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	CHISTONE_REQUIRE_NGINX=1 $(PY) -m pytest

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) var
