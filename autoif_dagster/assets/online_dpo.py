"""Step 13, online DPO: the policy being trained samples its own answers, the instructions'
verifiers judge them in the sandbox, the method's rule makes (chosen, rejected) pairs of them,
and a DPO step trains on those; then again from the new checkpoint, for N iterations. TRL's
own online DPO fixes two generations per prompt and a reward model; AutoIF samples K and lets
execution feedback decide. Every iteration's checkpoint and pairs are kept beside the asset's
checkpoints (`CHECKPOINT_DIR/online_dpo_checkpoint.iterations/RUN/`)."""

from collections import defaultdict
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from .. import pools
from ..config import AutoIFConfig
from ..method import training as method
from ..method.selection import dpo_pairs as make_pairs
from ..method.selection import pass_rate
from ..resources.checkpoints import Checkpoint, TrainedModel, write_checkpoint
from ..resources.llm import ChatRequest, LLMResource
from ..resources.vllm_engine import shutdown_engines
from ..resources.sandbox import SandboxResource
from ..resources.training import TrainingResource
from ..rounds import ALL_ROUNDS
from ..schemas import content_id, frame
from ..versions import frame_version
from .responses import judge_by_instruction
from .reporting import curves, md_table
from .training import CHECKPOINT_IO, GROUP, checkpoint_output

ASSET = "online_dpo_checkpoint"


def sampling_plan(prompts: list[dict], samples: int, query_only: int) -> list[tuple[dict, int, str]]:
    """(prompt row, sample index, user turn): `samples` answers to each prompt and `query_only`
    more to its query alone (candidate rejected answers: a small policy's samples of one prompt
    tend to pass or fail together)."""
    return [(p, k, p["prompt"] if k < samples else p["query"]) for p in prompts for k in range(samples + query_only)]


def iteration_pairs(answers: list[dict], chosen_min: float, rejected_max: float, max_pairs: int) -> list[dict]:
    """The method's pairs (selection.dpo_pairs) of one iteration's judged answers, as dpo_pairs rows."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for a in answers:
        by_prompt[a["prompt_id"]].append(a)
    rows = []
    for prompt_id, group in by_prompt.items():
        found = {a["answer_id"]: a for a in group}
        for chosen, rejected in make_pairs([(a["answer_id"], a["pass_rate"]) for a in group], chosen_min=chosen_min,
                                           rejected_max=rejected_max, max_pairs=max_pairs):
            c, r = found[chosen], found[rejected]
            rows.append({"pair_id": content_id("pair", chosen, rejected), "prompt_id": prompt_id,
                         "chosen_response_id": chosen, "rejected_response_id": rejected, "prompt": c["prompt"],
                         "chosen": c["response"], "rejected": r["response"], "chosen_pass_rate": c["pass_rate"],
                         "rejected_pass_rate": r["pass_rate"], "rejected_with_instruction": r["with_instruction"]})
    return rows


@dg.asset(group_name=GROUP, kinds={"pytorch", "vllm"}, pool=pools.GPU, io_manager_key=CHECKPOINT_IO,
          ins={"instruction_prompts": ALL_ROUNDS, "verifiers": ALL_ROUNDS})
def online_dpo_checkpoint(context: dg.AssetExecutionContext, autoif: AutoIFConfig, training: TrainingResource,
                          base_llm: LLMResource, sandbox: SandboxResource, checkpoint_io_manager: dg.ResourceParam[Any],
                          sft_checkpoint: Checkpoint, instruction_prompts: pl.DataFrame,
                          verifiers: pl.DataFrame) -> dg.Output[TrainedModel]:
    """N iterations of: the current policy (the SFT checkpoint first, or the base model:
    training.online.start) samples K answers per prompt, every verifier of the prompt's
    instruction judges them, and a DPO step trains on the pairs the method's rule makes."""
    cfg = training.online
    with_verifiers = set(verifiers["instruction_id"].to_list())
    prompts = [p for p in instruction_prompts.to_dicts() if p["instruction_id"] in with_verifiers]
    prompts = sorted(prompts, key=lambda p: p["prompt_id"])[: cfg.prompts]
    if not prompts:
        raise method.TrainingDataError("online DPO: no instruction prompt has verifiers to judge answers with "
                                       "(materialize the data of a round first: the autoif job)")
    # beside the asset's own checkpoints (the IO manager's folder), which it prunes; these it does not
    folder = Path(checkpoint_io_manager.base_dir) / f"{ASSET}.iterations" / context.run.run_id[:8]
    current = sft_checkpoint if cfg.start == "sft" else None
    trained: TrainedModel | None = None
    report: list[dict] = []
    for i in range(1, cfg.iterations + 1):
        policy = base_llm if current is None else base_llm.serving(current)
        identity = policy.model_identity()  # reads the checkpoint's manifest: once per iteration
        plan = sampling_plan(prompts, cfg.samples_per_prompt, cfg.query_only_samples)
        requests = [ChatRequest([{"role": "user", "content": turn}], max_tokens=cfg.max_tokens,
                                temperature=cfg.temperature, top_p=cfg.top_p, seed=autoif.seed + 1000 * i + k)
                    for _, k, turn in plan]
        result = policy.chat(requests, context=context)
        answers, seen, truncated = [], set(), 0
        for (p, k, _), c in zip(plan, result.completions):
            if c.finish_reason != "stop" or not c.text.strip():  # cut off or refused: not an answer to train on
                truncated += 1
                continue
            if (p["prompt_id"], c.text) in seen:
                continue
            seen.add((p["prompt_id"], c.text))
            answers.append({"answer_id": content_id("response", p["prompt_id"], identity, i, k, c.text),
                            "prompt_id": p["prompt_id"], "instruction_id": p["instruction_id"], "prompt": p["prompt"],
                            "response": c.text, "with_instruction": k < cfg.samples_per_prompt})
        judged, calls = judge_by_instruction(
            sandbox, [(a["answer_id"], a["instruction_id"], a["response"]) for a in answers], verifiers)
        for a in answers:
            a["pass_rate"] = pass_rate([v for _, v in judged[a["answer_id"]]])[2]
        rows = iteration_pairs(answers, autoif.dpo.chosen_min_pass_rate, autoif.dpo.rejected_max_pass_rate,
                               autoif.dpo.max_pairs_per_prompt)
        pairs = frame("dpo_pairs", rows)
        step = {"iteration": i, "policy": identity, "sampled": len(plan), "unfinished": truncated,
                "answers": len(answers), "passing": sum(a["pass_rate"] >= autoif.dpo.chosen_min_pass_rate for a in answers),
                "pairs": len(rows), "sandbox_executed": calls.get("executed", 0)}
        context.log.info(f"online DPO iteration {i}/{cfg.iterations}: {step}")
        if rows:
            shutdown_engines()  # the policy's engine out of memory before the trainer loads the model
            trained = training.train_online_dpo(method.dpo_rows(rows), base=base_llm.model, start=current,
                                                data_version=frame_version(pairs), iteration=i, log=context.log)
            current = write_checkpoint(trained, folder, f"iteration-{i}")
            pairs.write_parquet(folder / f"iteration-{i}.pairs.parquet")
            metrics = trained.manifest["metrics"]
            step.update(loss=round(metrics.get("last_loss", float("nan")), 4),
                        reward_accuracy=round(metrics.get("rewards/accuracies", float("nan")), 3),
                        checkpoint=str(current.path))
        report.append(step)
    if trained is None:
        raise method.TrainingDataError(
            f"online DPO: {cfg.iterations} iteration(s) of {len(prompts)} prompts x {cfg.samples_per_prompt} samples "
            "gave no (chosen, rejected) pair: every answer of a prompt passed its verifiers or every one failed "
            f"({report[-1]}); sample more (training.online.samples_per_prompt, query_only_samples) or more prompts")
    trained.manifest["online"] = {"iterations": report, "folder": str(folder), "prompts": len(prompts)}
    columns = ["iteration", "sampled", "unfinished", "answers", "passing", "pairs", "loss", "reward_accuracy"]
    return checkpoint_output(trained, {
        "iterations": dg.MetadataValue.md(md_table(report, columns)),
        "pairs_per_iteration": curves({"pairs": [(r["iteration"], r["pairs"]) for r in report],
                                       "passing answers": [(r["iteration"], r["passing"]) for r in report]},
                                      "online DPO: judged answers per iteration", "count"),
        "iterations_folder": dg.MetadataValue.path(str(folder)),
    })
