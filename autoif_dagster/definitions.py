"""The one Definitions object: every asset, resource and job of the project.

Runs use the in-process executor: a run's steps share one process, so they share one LLM
engine (an engine takes ~25 s to start on a CPU and minutes on a GPU; Dagster's multiprocess
executor would start one per step).
"""

import json
import os

import dagster as dg

from .assets import (consistency, datasets, evaluation, grpo, instructions, online_dpo, queries, responses, training,
                     verifiers)
from .checks import all_checks
from .home import Home
from .terminal import stage_lines
from .versions import with_code_versions


ASSET_MODULES = [instructions, verifiers, consistency, queries, responses, datasets]  # the data: autoif_job
MODEL_MODULES = [evaluation]  # the models' scores: the base's (evaluate_job), each checkpoint's (train_job)
TRAINING_MODULES = [training, online_dpo, grpo]  # the checkpoints trained on the data: train_job
# each asset's code version is a fingerprint of what defines it (versions.py)
all_assets = with_code_versions(dg.load_assets_from_modules(ASSET_MODULES))
model_assets = with_code_versions(dg.load_assets_from_modules(MODEL_MODULES))
training_assets = with_code_versions(dg.load_assets_from_modules(TRAINING_MODULES))

autoif_job = dg.define_asset_job(
    "autoif",
    selection=dg.AssetSelection.assets(*all_assets),
    description="Materialize the whole AutoIF graph for a round (a day): seeds to that round's "
    "data, then the SFT data and DPO pairs of every round so far, with the asset checks "
    "(checks.py); a failed blocking check stops what is downstream of it.",
)

# Nightly regeneration: at 02:00 the day's round, then the combined datasets, in one run.
# Off until turned on (UI: Automation, or `dagster schedule start nightly_regeneration`).
nightly_regeneration = dg.build_schedule_from_partitioned_job(
    autoif_job, name="nightly_regeneration", hour_of_day=2, minute_of_hour=0,
    description="Tonight's round of the whole graph (Dagster's daemon runs it: `dagster dev` or a deployment).",
)


evaluate_job = dg.define_asset_job(
    "evaluate", selection=dg.AssetSelection.assets("benchmark_prompts", "base_benchmark_scores"),
    description="Score the base model on IFEval and IFBench with the official checkers (the "
    "evaluation group; the prompts' subset and sources are resources.evaluation_config).",
)


train_job = dg.define_asset_job(
    "train", selection=dg.AssetSelection.assets(*training_assets, *model_assets),
    description="Train the checkpoints from base_llm's model with TRL (resources.training: LoRA or a whole "
    "fine-tune, the hyperparameters): SFT on sft_dataset, offline DPO on dpo_pairs, online DPO on the "
    "policy's own samples judged by the verifiers; then score the base and each checkpoint on IFEval and "
    "IFBench. The data assets must have been materialized (the autoif job).",
)


class TraceConfig(dg.Config):
    id: str  # any row's id (sft-..., pair-..., resp-...) or a generation id (gen-...)


@dg.op(description="`autoif trace` from the UI: the chain of one row back to its seed instruction.")
def trace_row(context: dg.OpExecutionContext, config: TraceConfig) -> None:
    from .trace import Tracer, render

    tree = Tracer(Home.from_env().root).trace(config.id)  # a bad id fails the run with the message
    text = render(tree)
    context.log.info(text)
    context.add_output_metadata({"trace": dg.MetadataValue.md(f"```\n{text}\n```"),
                                 "trace_json": dg.MetadataValue.json(json.loads(json.dumps(tree, default=str)))})


@dg.job(description="Trace one row (launchpad: ops.trace_row.config.id) back to its seed instruction.")
def trace_job():
    trace_row()


def default_resources() -> dict:
    """The resources of the home in $AUTOIF_HOME (./.autoif). AUTOIF_LLM_BACKEND=replay answers
    from its ledger only (re-parse a run without a model); AUTOIF_SANDBOX picks where verifiers
    run: Docker by default (scripts/setup_docker.sh), "host" or "local" only when chosen."""
    return Home.from_env().resources(llm_backend=os.environ.get("AUTOIF_LLM_BACKEND"),
                                     sandbox_backend=os.environ.get("AUTOIF_SANDBOX"))


defs = dg.Definitions(
    assets=[*all_assets, *model_assets, *training_assets],
    asset_checks=all_checks,
    jobs=[autoif_job, evaluate_job, train_job, trace_job],
    schedules=[nightly_regeneration],
    resources=default_resources(),
    executor=dg.in_process_executor,
    # Dagster's console logger unless a run's config names another (the CLI names stage_lines)
    loggers={"console": dg.colored_console_logger, "stage_lines": stage_lines},
)
