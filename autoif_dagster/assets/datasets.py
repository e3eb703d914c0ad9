"""Stage 11-12: the training data: SFT samples and DPO preference pairs, of every round so
far, and their export in the formats trainers read; and the RL prompts (each instruction
prompt with its instruction's kept verifiers, the reward of RL with verifiable rewards) and
their export for TRL, verl and open-instruct."""

from collections import Counter, defaultdict

import dagster as dg
import polars as pl

from .. import pools
from ..config import AutoIFConfig
from ..method.selection import dpo_pairs as make_pairs
from ..resources.exports import ExportResource
from ..resources.sandbox import SandboxResource
from ..rewards import probes
from ..rounds import ALL_ROUNDS, per_round
from ..schemas import content_id, frame
from ..versions import output
from .reporting import funnel, md_table
from .responses import held_score

GROUP = "datasets"
# every round materialized so far (the datasets combine them)
ROUND_INPUTS = {name: ALL_ROUNDS for name in ("instruction_prompts", "responses", "response_verdicts", "quality_scores")}


def _scored(responses: pl.DataFrame, response_verdicts: pl.DataFrame, quality_scores: pl.DataFrame) -> pl.DataFrame:
    """Every response with its pass rate and (if it was scored) its quality score: the expected
    one where the judge's probabilities were read, else the sampled one."""
    if "expected_score" not in quality_scores.columns:  # a round scored before expected scores
        quality_scores = quality_scores.with_columns(expected_score=pl.lit(None, pl.Float64))
    return (
        responses.select("response_id", "prompt_id", "response", "with_instruction")
        .join(response_verdicts.select("response_id", "pass_rate"), on="response_id")
        .join(quality_scores.select("response_id", score=held_score()), on="response_id", how="left")
    )


@dg.asset(group_name=GROUP, kinds={"polars"}, ins=ROUND_INPUTS)
@per_round(unique_by=["messages"])
def sft_dataset(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    instruction_prompts: pl.DataFrame,
    responses: pl.DataFrame,
    response_verdicts: pl.DataFrame,
    quality_scores: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """(query + instruction) -> response chat samples that pass the verifiers and the quality bar."""
    scored = _scored(responses, response_verdicts, quality_scores).join(instruction_prompts, on="prompt_id")
    dropped: Counter = Counter()
    rows = []
    for r in scored.iter_rows(named=True):
        if r["pass_rate"] <= autoif.responses.pass_rate_above:
            dropped["below_pass_rate"] += 1
        elif r["score"] is None:
            dropped["unscored"] += 1
        elif r["score"] < autoif.scoring.min_score:
            dropped["below_quality_score"] += 1
        else:
            rows.append(
                {"sample_id": content_id("sft", r["response_id"]), "prompt_id": r["prompt_id"],
                 "response_id": r["response_id"], "instruction_id": r["instruction_id"], "query_id": r["query_id"],
                 "messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}],
                 "pass_rate": r["pass_rate"], "score": r["score"]}
            )
    df = frame("sft_dataset", rows)
    return output(df, funnel(scored.height, df, dropped))


@dg.asset(group_name=GROUP, kinds={"polars"}, ins=ROUND_INPUTS)
@per_round(unique_by=["prompt", "chosen", "rejected"])
def dpo_pairs(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    instruction_prompts: pl.DataFrame,
    responses: pl.DataFrame,
    response_verdicts: pl.DataFrame,
    quality_scores: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Per prompt: chosen responses pass most verifiers (and the quality bar), rejected ones none."""
    cfg = autoif.dpo
    scored = _scored(responses, response_verdicts, quality_scores)
    text = dict(zip(scored["response_id"].to_list(), scored["response"].to_list()))
    rate = dict(zip(scored["response_id"].to_list(), scored["pass_rate"].to_list()))
    with_instruction = dict(zip(scored["response_id"].to_list(), scored["with_instruction"].to_list()))
    candidates: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in scored.iter_rows(named=True):
        # a chosen response must also have passed the quality check; a rejected one need not
        chosen_ok = r["score"] is not None and r["score"] >= autoif.scoring.min_score
        if chosen_ok or r["pass_rate"] <= cfg.rejected_max_pass_rate:
            candidates[r["prompt_id"]].append((r["response_id"], r["pass_rate"]))
    prompt_text = dict(zip(instruction_prompts["prompt_id"].to_list(), instruction_prompts["prompt"].to_list()))
    rows = []
    dropped: Counter = Counter()
    for prompt_id in scored["prompt_id"].unique(maintain_order=True).to_list():
        pairs = make_pairs(candidates[prompt_id], chosen_min=cfg.chosen_min_pass_rate,
                           rejected_max=cfg.rejected_max_pass_rate, max_pairs=cfg.max_pairs_per_prompt)
        if not pairs:
            dropped["no_chosen_and_rejected"] += 1
        for chosen, rejected in pairs:
            rows.append(
                {"pair_id": content_id("pair", chosen, rejected), "prompt_id": prompt_id,
                 "chosen_response_id": chosen, "rejected_response_id": rejected, "prompt": prompt_text[prompt_id],
                 "chosen": text[chosen], "rejected": text[rejected],
                 "chosen_pass_rate": rate[chosen], "rejected_pass_rate": rate[rejected],
                 "rejected_with_instruction": with_instruction[rejected]}
            )
    df = frame("dpo_pairs", rows)
    rejected_query_only = int((~df["rejected_with_instruction"]).sum())
    return output(df, funnel(scored["prompt_id"].n_unique(), df, dropped, unit="prompts in, pairs out",
                             pairs_rejected_query_only=rejected_query_only))


@dg.asset(group_name=GROUP, kinds={"polars", "json"})
def training_exports(context: dg.AssetExecutionContext, exports: ExportResource, sft_dataset: pl.DataFrame,
                     dpo_pairs: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The SFT data and DPO pairs as trainers read them: LLaMA-Factory (alpaca, sharegpt and its
    dataset_info.json), chat-messages JSONL (TRL), Hugging Face `datasets`; optionally the Hub.
    The manifest lists every file written."""
    manifest = frame("training_exports", exports.export(sft_dataset.to_dicts(), dpo_pairs.to_dicts()))
    version = manifest["version"][0] if manifest.height else ""
    context.log.info(f"exported {sft_dataset.height} SFT rows and {dpo_pairs.height} DPO pairs to "
                     f"{exports.directory}/{version}")
    return output(manifest, {
        "rows_out": manifest.height, "dagster/row_count": manifest.height, "files": manifest.height, "version": version,
        "directory": dg.MetadataValue.path(f"{exports.directory}/{version}"),
        "manifest": dg.MetadataValue.md(md_table(manifest.select("file", "set", "rows", "bytes").to_dicts(),
                                                 ["file", "set", "rows", "bytes"])),
        **({"hub_repo": exports.hub_repo} if exports.hub_repo else {}),
    })


EXAMPLES = 5  # RL prompts shown in rl_prompts' metadata


def _rl_prompts_of_round(context: dg.AssetExecutionContext, sandbox: SandboxResource,
                         instruction_prompts: pl.DataFrame, verifiers: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """One round's RL prompts: its instruction prompts whose instruction kept verifiers in this
    round (per_round gives the body one round of each input: a verifier of the same
    instruction in another round is another round's function)."""
    kept: dict[str, list[dict]] = defaultdict(list)
    for v in verifiers.iter_rows(named=True):
        kept[v["instruction_id"]].append(v)
    asked = [iid for iid in instruction_prompts["instruction_id"].unique(maintain_order=True).to_list() if iid in kept]
    # per instruction, not per prompt: its prompts share its verifiers
    probe_of = dict(zip(asked, probes([[v["func"] for v in kept[iid]] for iid in asked], sandbox))) if asked else {}
    rows, dropped = [], Counter()
    for p in instruction_prompts.iter_rows(named=True):
        found = kept.get(p["instruction_id"])
        if not found:
            dropped["no_verifier"] += 1
            continue
        rows.append({"prompt_id": p["prompt_id"], "instruction_id": p["instruction_id"],
                     "instruction": p["instruction"], "query": p["query"], "prompt": p["prompt"],
                     "verifier_ids": [v["verifier_id"] for v in found],
                     "verifiers": [v["func"] for v in found], "verifier_accuracy": [v["accuracy"] for v in found],
                     "probe": probe_of[p["instruction_id"]]})
    df = frame("rl_prompts", rows)
    return output(df, funnel(instruction_prompts.height, df, dropped, probe_prompts=int(df["probe"].sum()),
                             instructions=df["instruction_id"].n_unique()))


@dg.asset(group_name=GROUP, kinds={"polars"}, pool=pools.SANDBOX,
          ins={"instruction_prompts": ALL_ROUNDS, "verifiers": ALL_ROUNDS})
def rl_prompts(context: dg.AssetExecutionContext, sandbox: SandboxResource, instruction_prompts: pl.DataFrame,
               verifiers: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Instruction prompts with their instruction's kept verifiers (same round), for RL with the
    verifiers as the reward (rewards.VerifierReward); `probe` marks prompts whose verifiers a
    degenerate answer passes (the trip-wire). Of every round so far; an identical prompt of a
    later round is dropped (the earliest round's row, with its verifiers, is kept)."""
    merged = per_round(_rl_prompts_of_round, unique_by=["prompt"])(
        context, sandbox=sandbox, instruction_prompts=instruction_prompts, verifiers=verifiers)
    df = merged.value
    counts = df.group_by("instruction_id", maintain_order=True).agg(
        pl.first("instruction"), prompts=pl.len(), verifiers=pl.first("verifiers").list.len(), probe=pl.first("probe"))
    return output(df, {
        **merged.metadata,
        "preview": dg.MetadataValue.md(md_table(df.head(EXAMPLES).to_dicts(),
                                                ["round", "prompt_id", "instruction", "query"], 60)),
        "probe_prompts": int(df["probe"].sum()), "instructions": df["instruction_id"].n_unique(),
        "examples": dg.MetadataValue.md(md_table(counts.head(EXAMPLES).to_dicts(),
                                                 ["instruction", "verifiers", "prompts", "probe"])),
    })


@dg.asset(group_name=GROUP, kinds={"polars", "json", "parquet"})
def rlvr_exports(context: dg.AssetExecutionContext, exports: ExportResource,
                 rl_prompts: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The RL prompts as RL trainers read them: TRL (JSONL and Hugging Face `datasets`, for
    GRPOTrainer with rewards.VerifierReward), verl (parquet, with rewards.compute_score) and
    open-instruct (RLVR JSONL, with rewards.open_instruct_verifier). The manifest lists every
    file written."""
    manifest = frame("rlvr_exports", exports.export_rlvr(rl_prompts.to_dicts()))
    version = manifest["version"][0] if manifest.height else ""
    folder = f"{exports.directory}/rlvr/{version}"
    context.log.info(f"exported {rl_prompts.height} RL prompts to {folder}")
    return output(manifest, {
        "rows_out": manifest.height, "dagster/row_count": manifest.height, "files": manifest.height,
        "rl_prompts": rl_prompts.height, "version": version, "directory": dg.MetadataValue.path(folder),
        "manifest": dg.MetadataValue.md(md_table(manifest.select("file", "format", "rows", "bytes").to_dicts(),
                                                 ["file", "format", "rows", "bytes"])),
        **({"hub_repo": exports.hub_repo} if exports.hub_repo else {}),
    })
