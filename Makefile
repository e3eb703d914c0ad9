# Each target installs what it needs first (scripts/install.sh is idempotent).
PY := .venv/bin/python
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install install-gpu sandbox browser run chain test docs ui bench

install:
	bash scripts/install.sh cpu

install-gpu:
	bash scripts/install.sh gpu

# The Docker engine (installed and started if missing) and the verifier sandbox image; and
# bubblewrap with Debian's python3 packages for the no-Docker `host` backend.
sandbox:
	$(SUDO) bash scripts/setup_docker.sh
	$(SUDO) bash scripts/setup_host_sandbox.sh

# Debian's chromium, which Playwright drives in the UI test (tests/test_ui_browser.py), and a
# font for it to draw text with (only recommended by the package)
browser:
	$(SUDO) bash scripts/apt_install.sh browser chromium fonts-liberation

run: install sandbox
	$(PY) -m autoif_dagster.cli run

# The whole chain: the data (run), then the SFT, offline-DPO, online-DPO and GRPO checkpoints and
# the IFEval/IFBench scores of the base and each (autoif train). IFEVAL / IFBENCH: prompt files in
# the official JSONL format; unset, the Hugging Face Hub. ROUNDS=FIRST:LAST: several rounds of
# data (more to learn from than one); FULL=1: every prompt of both benchmarks.
chain: install sandbox
	$(PY) -m autoif_dagster.cli run $(if $(ROUNDS),--round $(ROUNDS))
	$(PY) -m autoif_dagster.cli train $(if $(FULL),--full) $(if $(IFEVAL),--ifeval $(IFEVAL)) $(if $(IFBENCH),--ifbench $(IFBENCH))

# AUTOIF_CI=1: a test that cannot run here (no Docker engine, no chromium, another CPU) fails
# rather than skips (tests/ci.py). The docs site is built first, warnings as errors.
test: install sandbox browser docs
	AUTOIF_CI=1 $(PY) -m pytest

# The docs site (MkDocs, strict: a broken link or a page missing from the nav fails) into .site/;
# its reference pages are generated from the code (tests/test_docs.py fails when one is stale).
docs: install
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet

ui: install sandbox
	$(PY) -m autoif_dagster.cli ui

bench: install sandbox
	$(PY) benchmarks/bench_engine_peak.py
	$(PY) benchmarks/bench_main_job.py --rerun
	$(PY) benchmarks/bench_model_yield.py
	$(PY) benchmarks/bench_llm_batching.py
	$(PY) benchmarks/bench_sandbox.py
