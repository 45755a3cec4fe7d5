# The README's commands: `make test` (what CI runs) and `make demo` (a local cluster).
# Needs only make, bash and python3: everything else is installed by scripts/bootstrap.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv lint test test-fast demo bench bench-peers chaos clean

venv:
	@bash scripts/bootstrap

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # the packages in [tool.mypy]: scheduler, workers

# pytest exits 5 when it collected no tests: that is a failure too, not a pass.
define run_pytest
	rc=0; $(VENV)/bin/pytest $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc
endef

test: venv lint
	@$(call run_pytest,-q)

test-fast: venv
	@$(call run_pytest,-q -m "not slow")

demo: venv
	bash deploy/local-cluster.sh

bench: venv
	@if [ -f bench/__main__.py ]; then $(PY) -m bench; \
	else echo "no benchmark entry point yet (bench/__main__.py)"; fi

bench-peers: venv
	bash bench/side_by_side.sh

chaos: venv
	@if [ -f tests/chaos.py ] || [ -f tests/chaos/__main__.py ]; then $(PY) -m tests.chaos; \
	else echo "no chaos runner yet (tests/chaos)"; fi

clean:
	rm -rf run .pytest_cache .mypy_cache .ruff_cache
