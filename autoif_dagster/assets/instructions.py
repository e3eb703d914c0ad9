"""Stage 1-2: seed instructions and their self-instruct augmentation."""

from collections import Counter

import dagster as dg
import polars as pl

from ..config import AutoIFConfig
from ..method import prompts
from ..method.parsing import ParseError, parse_instruction_line, split_lines
from ..method.selection import dedupe_key, sample_for
from ..resources.llm import LLMResource
from ..schemas import content_id, frame
from ..sources import load_seeds
from .reporting import funnel

GROUP = "instructions"


@dg.asset(group_name=GROUP, kinds={"polars"}, code_version="1")
def seed_instructions(context: dg.AssetExecutionContext, autoif: AutoIFConfig) -> dg.Output[pl.DataFrame]:
    """Hand-written format constraints a Python function can check (packaged, or `seeds_path`)."""
    seeds = load_seeds(autoif.seeds_path)
    df = frame("seed_instructions", [{"instruction_id": content_id("instruction", s), "instruction": s} for s in seeds])
    return dg.Output(df, metadata=funnel(len(seeds), df, Counter(), source=autoif.seeds_path or "packaged"))


@dg.asset(group_name=GROUP, kinds={"polars", "vllm"}, code_version="1", pool="llm")
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
    requests = [
        cfg.sampling.request(
            prompts.augment_prompt(sample_for(f"round-{r}", seeds, n_examples, autoif.seed), cfg.new_per_round),
            seed=autoif.seed + r,
        )
        for r in range(cfg.rounds)
    ]
    completions = supervisor_llm.chat(requests, log=context.log)

    dropped: Counter = Counter()
    rows = [{**row, "origin": "seed", "generation_id": None} for row in seed_instructions.to_dicts()]
    seen = {dedupe_key(s) for s in seeds}
    for request, completion in zip(requests, completions):
        generation_id = content_id("generation", supervisor_llm.model, request.messages, request.seed)
        for line in split_lines(completion.text):
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
                 "origin": "augmented", "generation_id": generation_id}
            )
    parsed = len(rows) - len(seeds) + sum(dropped.values())
    if len(rows) > cfg.max_instructions:
        keep = set(sample_for("cap", [r["instruction_id"] for r in rows], cfg.max_instructions, autoif.seed))
        dropped["over_max_instructions"] += len(rows) - len(keep)
        rows = [r for r in rows if r["instruction_id"] in keep]
    df = frame("augmented_instructions", rows)
    return dg.Output(
        df,
        metadata=funnel(
            len(seeds) + parsed, df, dropped,
            new_instructions=int((df["origin"] == "augmented").sum()),
            **supervisor_llm.take_stats(),
        ),
    )
