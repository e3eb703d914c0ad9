import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from autoif_dagster.definitions import defs
from autoif_dagster.schemas import CHECKPOINT_ARTIFACTS, SCHEMAS

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_and_every_artifact_is_an_asset():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == set(SCHEMAS) | set(CHECKPOINT_ARTIFACTS)
    job = defs.resolve_job_def("autoif")
    assert job.executor_def is dg.in_process_executor  # one process per run: one LLM engine


def test_lineage_runs_seed_to_training_data():
    graph = defs.resolve_asset_graph()
    sft = dg.AssetKey("sft_dataset")
    ancestors = set()
    frontier = [sft]
    while frontier:
        key = frontier.pop()
        for parent in graph.get(key).parent_keys:
            if parent not in ancestors:
                ancestors.add(parent)
                frontier.append(parent)
    names = {k.to_user_string() for k in ancestors}
    assert {"seed_instructions", "verifiers", "nli_verdicts", "queries", "responses", "quality_scores"} <= names


def test_loading_definitions_does_not_import_heavy_libraries():
    code = "import sys, autoif_dagster.definitions; print(sorted(m for m in ('vllm', 'torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_dagster_cli_validates_the_workspace():
    dagster = Path(sys.executable).with_name("dagster")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # an ephemeral instance
    out = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]


def test_default_run_is_strong_to_weak_and_each_llm_stage_uses_its_role():
    from autoif_dagster.definitions import all_assets, default_resources
    from autoif_dagster.resources.models import DEFAULT_POLICY, DEFAULT_SUPERVISOR

    resources = default_resources()
    assert (resources["supervisor_llm"].model, resources["policy_llm"].model) == (DEFAULT_SUPERVISOR, DEFAULT_POLICY)
    needs = {key.to_user_string(): a.required_resource_keys for a in all_assets for key in a.keys}
    assert "policy_llm" in needs["responses"] and "supervisor_llm" not in needs["responses"]
    for stage in ["augmented_instructions", "verifier_candidates", "back_translations", "nli_verdicts", "quality_scores"]:
        assert "supervisor_llm" in needs[stage] and "policy_llm" not in needs[stage], stage
