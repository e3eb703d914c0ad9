# Each target installs what it needs first (scripts/install.sh is idempotent).
PY := .venv/bin/python
export AUTOIF_HOME ?= $(CURDIR)/.autoif
export DAGSTER_HOME ?= $(AUTOIF_HOME)/dagster

.PHONY: install install-gpu run test ui bench

install:
	bash scripts/install.sh cpu

install-gpu:
	bash scripts/install.sh gpu

run: install
	$(PY) -m autoif_dagster.cli run

test: install
	$(PY) -m pytest

ui: install
	mkdir -p $(DAGSTER_HOME)
	.venv/bin/dagster dev -w workspace.yaml

bench: install
	$(PY) benchmarks/bench_main_job.py
	$(PY) benchmarks/bench_llm_batching.py
