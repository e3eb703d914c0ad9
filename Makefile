# Each target installs what it needs first (scripts/install.sh is idempotent).
PY := .venv/bin/python
# the Dagster instance `autoif run` records its runs in (SQLite), shown by `make ui`
UI_HOME := $(CURDIR)/.autoif/dagster

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install install-gpu sandbox run test ui bench

install:
	bash scripts/install.sh cpu

install-gpu:
	bash scripts/install.sh gpu

# The Docker engine (installed and started if missing) and the verifier sandbox image; and
# bubblewrap with Debian's python3 packages for the no-Docker `host` backend.
sandbox:
	$(SUDO) bash scripts/setup_docker.sh
	$(SUDO) bash scripts/setup_host_sandbox.sh

run: install sandbox
	$(PY) -m autoif_dagster.cli run

# AUTOIF_REQUIRE_DOCKER: the Docker tests fail, rather than skip, without an engine.
test: install sandbox
	AUTOIF_REQUIRE_DOCKER=1 $(PY) -m pytest

ui: install sandbox
	mkdir -p $(UI_HOME)
	test -f $(UI_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\n' > $(UI_HOME)/dagster.yaml
	DAGSTER_HOME=$(UI_HOME) .venv/bin/dagster dev -w workspace.yaml

bench: install sandbox
	$(PY) benchmarks/bench_engine_peak.py
	$(PY) benchmarks/bench_main_job.py --rerun
	$(PY) benchmarks/bench_model_yield.py
	$(PY) benchmarks/bench_llm_batching.py
	$(PY) benchmarks/bench_sandbox.py
