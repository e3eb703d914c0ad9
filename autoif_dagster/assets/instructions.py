"""Stage 1-2: seed instructions and their self-instruct augmentation."""

from collections import Counter

import dagster as dg
import polars as pl

from .. import pools
from ..config import AutoIFConfig
from ..method import stages
from ..method.parsing import ParseError, parse_instruction_line
from ..method.selection import dedupe_key, sample_for
from ..resources.llm import LLMResource
from ..rounds import PARTITIONED, per_round
from ..schemas import content_id, frame
from ..sources import load_seed_rows
from .llm_stage import run_stage
from ..versions import output
from .reporting import funnel

GROUP = "instructions"


@dg.asset(group_name=GROUP, kinds={"polars"})
def seed_instructions(context: dg.AssetExecutionContext, autoif: AutoIFConfig) -> dg.Output[pl.DataFrame]:
    """Hand-written format constraints a Python function can check (packaged, or `seeds_path`)."""
    seeds = load_seed_rows(autoif.seeds_path)
    df = frame("seed_instructions", [{"instruction_id": content_id("instruction", s["instruction"]), **s} for s in seeds])
    return output(df, funnel(len(seeds), df, Counter(), source=autoif.seeds_path or "packaged",
                             with_reference_checker=int(df["reference"].is_not_null().sum())))


@dg.asset(group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU, **PARTITIONED)
@per_round
def augmented_instructions(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    supervisor_llm: LLMResource,
    seed_instructions: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Seeds plus new instructions the supervisor writes from seed examples (self-instruct)."""
    cfg = autoif.augment
    seeds = seed_instructions["instruction"].to_list()
    n_examples = min(cfg.examples_per_round, len(seeds))
    items = [(r, (sample_for(f"round-{r}", seeds, n_examples, autoif.seed), cfg.new_per_round), autoif.seed + r)
             for r in range(cfg.rounds)]
    run = run_stage(context, supervisor_llm, stages.AUGMENT, items, cfg.sampling)

    dropped = run.dropped
    rows = [{"instruction_id": row["instruction_id"], "instruction": row["instruction"], "origin": "seed",
             "generation_id": None} for row in seed_instructions.to_dicts()]
    seen = {dedupe_key(s) for s in seeds}
    for parsed in run.parsed:
        for line in parsed.value:
            try:
                text = parse_instruction_line(line)
            except ParseError as exc:
                dropped[exc.reason] += 1
                continue
            if dedupe_key(text) in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(dedupe_key(text))
            rows.append(
                {"instruction_id": content_id("instruction", text), "instruction": text,
                 "origin": "augmented", "generation_id": parsed.completion.generation_id}
            )
    candidates = len(rows) - len(seeds) + sum(dropped.values())  # lines, and completions dropped whole
    if len(rows) > cfg.max_instructions:
        keep = set(sample_for("cap", [r["instruction_id"] for r in rows], cfg.max_instructions, autoif.seed))
        dropped["over_max_instructions"] += len(rows) - len(keep)
        rows = [r for r in rows if r["instruction_id"] in keep]
    df = frame("augmented_instructions", rows)
    return output(df, funnel(len(seeds) + candidates, df, dropped,
                             new_instructions=int((df["origin"] == "augmented").sum()), **run.metadata))
