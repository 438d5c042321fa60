# The two commands of a fresh machine: `make plan` (the main job: maze planning) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup plan test bench clean

setup:
	VENV=$(VENV) bash scripts/setup.sh

plan: setup
	$(PY) -m diffuser.cli plan maze

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m diffuser.cli bench

clean:
	rm -rf runs outputs .pytest_cache
