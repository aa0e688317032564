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

.PHONY: run test bench install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@$(BIN)/digest config --path >/dev/null 2>&1 || $(BIN)/digest init
	$(BIN)/digest run

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
