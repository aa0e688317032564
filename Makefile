# Two entry points do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv when missing. torch is installed first, pinned to a CPU build, so that
# sentence-transformers does not pull a multi-GB CUDA wheel. On a machine whose pip does not
# already find the CPU wheel, pass its index:
#   make run TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# pytest-xdist workers for `make test`: the suite mostly waits on daemon subprocesses and loopback
# servers, so two workers finish in about two thirds of the time even on 2 busy cores. 0 runs it in
# one process.
TEST_WORKERS ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run demo test test-fast bench docs install install-service clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The service's venv (docs/operations.md, "Installing the service"). digest.service runs as a DynamicUser= with
# ProtectHome=, so it can execute neither an interpreter under /root or /home (pyenv, conda: status=203/EXEC)
# nor a venv made from one: build it from the system python, and refuse when there is none.
SERVICE_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) $(shell command -v python3))
SERVICE_STAMP := $(VENV)/.service-installed

install-service: $(SERVICE_STAMP)

$(SERVICE_STAMP): pyproject.toml Makefile
	@case "$$(readlink -m '$(SERVICE_PYTHON)')" in \
	  /root/*|/home/*|/run/user/*) echo "make install-service: $(SERVICE_PYTHON) is under /root or /home, where" \
	    "digest.service (DynamicUser=, ProtectHome=) cannot run it; install the system python" \
	    "(apt-get install python3 python3-venv) or pass SERVICE_PYTHON=/path/to/python3" >&2; exit 1;; esac
	@test -x '$(SERVICE_PYTHON)' || { echo "make install-service: no python3 found (SERVICE_PYTHON='$(SERVICE_PYTHON)');" \
	  "install the system's: apt-get install python3 python3-venv" >&2; exit 1; }
	@'$(SERVICE_PYTHON)' -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make install-service:" \
	  "$(SERVICE_PYTHON) is Python $$('$(SERVICE_PYTHON)' -V 2>&1 | cut -d' ' -f2); digest needs 3.11 or newer" >&2; \
	  exit 1; }
	@! test -e $(BIN)/python || [ "$$(readlink -f $(BIN)/python)" = "$$(readlink -f '$(SERVICE_PYTHON)')" ] || { \
	  echo "make install-service: $(VENV) was made from $$(readlink -f $(BIN)/python), not $(SERVICE_PYTHON);" \
	  "remove it (make clean) and run make install-service again" >&2; exit 1; }
	test -x $(BIN)/python || '$(SERVICE_PYTHON)' -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	$(BIN)/digest check --service
	touch $(SERVICE_STAMP)

run: $(STAMP)
	@$(BIN)/digest config --path >/dev/null 2>&1 || $(BIN)/digest init
	$(BIN)/digest run

# The real pipeline against a recorded arXiv day, an SMTP sink and an LLM stub on loopback: no network.
demo: $(STAMP)
	$(BIN)/digest demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# Everything not marked slow (no embedding model, no daemon subprocess): the loop while editing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# The generated reference pages (docs/cli.md, docs/config.md), rewritten from the code; tests/test_docs.py
# fails while they are out of date.
docs: $(STAMP)
	$(BIN)/cog -r -I docs docs/cli.md docs/config.md

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
