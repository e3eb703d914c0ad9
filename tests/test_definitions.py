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


def test_the_default_run_is_self_alignment_on_one_engine_and_each_llm_stage_uses_its_role(monkeypatch):
    """The paper's self-alignment setting is the default (the 1.5B writes, judges and answers;
    README, "Choosing the default models"): both LLM roles, as a run initializes them, get one
    engine, started once; strong-to-weak, a second model, is a choice (--policy-model). The
    policy answers the queries; the supervisor does every other LLM stage."""
    from autoif_dagster.definitions import all_assets, default_resources
    from autoif_dagster.resources import vllm_engine

    built = []
    monkeypatch.setattr(vllm_engine.VLLMGenerator, "build_engine", lambda self: built.append(self.settings.model) or object())
    monkeypatch.setattr(vllm_engine, "_ENGINES", {})  # this test's engines only
    monkeypatch.setattr(vllm_engine, "_stop", lambda engines: None)  # fakes: nothing to stop
    resources = default_resources()
    with dg.build_resources({k: resources[k] for k in ("gpu", "supervisor_llm", "policy_llm")}) as run:
        assert run.supervisor_llm.engine() is run.policy_llm.engine()
    assert built == ["qwen2.5-coder-1.5b-instruct"]
    needs = {key.to_user_string(): a.required_resource_keys for a in all_assets for key in a.keys}
    assert "policy_llm" in needs["responses"] and "supervisor_llm" not in needs["responses"]
    for stage in ["augmented_instructions", "verifier_candidates", "back_translations", "nli_verdicts", "quality_scores"]:
        assert "supervisor_llm" in needs[stage] and "policy_llm" not in needs[stage], stage


GARBAGE_THAT_PARSES = """
import ast, gc

class Finalized:  # what a leaked connection does when collected: logs a traceback, which 3.11 formats with ast
    def __del__(self):
        ast.parse("x = 1")
        leak()

def leak():
    cycle = Finalized()
    cycle.self = cycle  # only the collector frees it, at any allocation

leak()
gc.set_threshold(50)
import autoif_dagster.definitions
print("loaded")
"""


def test_definitions_load_whatever_the_process_did_before():
    """Garbage with a finalizer that parses Python, collected while the code versions read a
    class's source (CPython 3.11's ast shares its recursion depth between nested parses): the
    definitions still load. Before the fix this failed with "AST constructor recursion depth
    mismatch" after tests/test_assets.py, and would in a long-lived code server."""
    out = subprocess.run([sys.executable, "-c", GARBAGE_THAT_PARSES], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "loaded", out.stderr[-2000:]


def test_evaluate_needs_no_data_and_each_checkpoint_is_scored_with_the_covered_types():
    """`autoif evaluate` scores a base in a home without data: every input of the evaluate job's
    assets is made in the job. The train job makes covered_instruction_types, which every
    checkpoint's scores read (the base's do not)."""
    from autoif_dagster.definitions import evaluate_job, train_job
    from autoif_dagster.schemas import SCORE_ARTIFACTS

    graph = defs.resolve_asset_graph()
    evaluate = evaluate_job.selection.resolve(graph)
    assert all(graph.get(key).parent_keys <= evaluate for key in evaluate)
    train = train_job.selection.resolve(graph)
    covered = dg.AssetKey("covered_instruction_types")
    assert covered in train
    for name in SCORE_ARTIFACTS:
        assert (covered in graph.get(dg.AssetKey(name)).parent_keys) == (name != "base_benchmark_scores"), name
