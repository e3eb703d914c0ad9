"""Rounds: each nightly regeneration is one daily partition of the generation assets.

A round's random seeds derive from its key (the day), so materializing a partition again
reproduces it (and, with the ledger, asks the models nothing). The generation assets
(instructions through quality scores) are partitioned by round; the SFT dataset and the DPO
pairs are not: they combine every round materialized so far, deduplicated by content, with
the round on each row.

Inside an asset, a round is a `round` column: the IO manager stores one Parquet file per
round and, when a run reads several (a backfill, the combined datasets), one frame holding
them all. An asset's body is written for one round (`per_round`); a single-run backfill of
many rounds runs each body once per round, in one process, on one LLM engine.
"""

import datetime as dt
import functools
import inspect
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import dagster as dg
import polars as pl

from .assets.reporting import bars, md_table, stage_yield_metadata
from .versions import output

FIRST_ROUND = "2026-11-01"  # round 0: the recorded default run (tests/fixtures) is this one
# end_offset=1: today's round exists today (a run on the day it is for, not a day later)
ROUNDS = dg.DailyPartitionsDefinition(start_date=FIRST_ROUND, end_offset=1)
# Round n seeds its stages with autoif.seed + SEED_STRIDE * n (stages add offsets below it).
SEED_STRIDE = 1000
# relied on knowingly: single-run backfills, and checks per round
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*", category=dg.PreviewWarning)
# Every partitioned asset: a backfill of many rounds is one run (one engine), not one per round.
PARTITIONED: dict[str, Any] = {"partitions_def": ROUNDS, "backfill_policy": dg.BackfillPolicy.single_run()}
# For an unpartitioned asset reading a partitioned one: the rounds materialized so far.
ALL_ROUNDS = dg.AssetIn(metadata={"allow_missing_partitions": True})


# Metadata a run over several rounds reports as totals (the funnel, the LLM's and the sandbox's
# calls: what `autoif run` and the benchmarks add up); the rest goes in the per-round table.
TOTALS = ("rows_in", "llm_requests", "llm_generated_tokens", "llm_seconds", "ledger_hits", "ledger_misses")
COUNTS = ("sandbox_calls", "llm_finish_reasons")


def round_index(key: str) -> int:
    """Days from the first round; a clear error for a key that is not a round."""
    try:
        day = dt.date.fromisoformat(key)
    except (TypeError, ValueError):
        raise ValueError(f"unknown round {key!r}: rounds are days, YYYY-MM-DD, from {FIRST_ROUND}") from None
    index = (day - dt.date.fromisoformat(FIRST_ROUND)).days
    if index < 0:
        raise ValueError(f"unknown round {key!r}: the first round is {FIRST_ROUND}")
    return index


def current_round() -> str:
    """Today's round, by the partitions' own clock (UTC): the one `autoif run` materializes
    unless told otherwise."""
    return ROUNDS.get_last_partition_key()


def resolve_rounds(spec: str | None) -> tuple[str, str]:
    """`--round`: None (today's), DAY, or FIRST:LAST -> (first, last), each a round that exists
    (from FIRST_ROUND to today), first <= last."""
    first, _, last = (spec or current_round()).partition(":")
    last = last or first
    existing = ROUNDS.get_last_partition_key()
    for key in (first, last):
        round_index(key)
        if key > existing:
            raise ValueError(f"round {key!r} is in the future: the last round today is {existing}")
    if first > last:
        raise ValueError(f"rounds {first}:{last} run backwards")
    return first, last


def round_seed(seed: int, key: str) -> int:
    return seed + SEED_STRIDE * round_index(key)


def per_round(body: Callable[..., Any] | None = None, *, unique_by: list[str] | None = None) -> Any:
    """An asset body written for one round, run once per round the asset materializes.

    Each call sees the frames of its round only (inputs with a `round` column, sliced), and an
    `autoif` config seeded for that round; its outputs are stamped with the round and
    concatenated. A partitioned asset's rounds are its run's partition keys; an unpartitioned
    one's (the combined datasets) every round found in its partitioned inputs, and
    `unique_by` keeps the first round's row of those with equal content. Metadata: the
    body's own for one round; for several, the rounds and each numeric entry per round."""
    if body is None:
        return functools.partial(per_round, unique_by=unique_by)

    @functools.wraps(body)
    def asset_fn(context: dg.AssetExecutionContext, **kwargs: Any) -> Any:
        partitioned = {k: v for k, v in kwargs.items() if isinstance(v, pl.DataFrame) and "round" in v.columns}
        if context.assets_def.partitions_def is not None:
            keys = list(context.partition_keys)
        else:
            keys = sorted({r for df in partitioned.values() for r in df["round"].unique().to_list()})
        results = []
        for key in keys:
            args = {**kwargs, **{k: v.filter(pl.col("round") == key) for k, v in partitioned.items()}}
            if "autoif" in args:
                args["autoif"] = args["autoif"].model_copy(update={"seed": round_seed(args["autoif"].seed, key)})
            if len(keys) > 1:
                context.log.info(f"round {key} ({keys.index(key) + 1} of {len(keys)})")
            results.append(_as_tuple(body(context, **args)))
        if not keys:  # the combined datasets before any round ran: their empty frames
            results.append(_as_tuple(body(context, **kwargs)))
        merged = tuple(_merge(keys, [r[i] for r in results], unique_by) for i in range(len(results[0])))
        if unique_by and keys:  # a combined dataset: how each of its rounds got there, stage by stage
            merged = tuple(output(o.value, {**o.metadata, **stage_yield_metadata(
                context.asset_key.to_user_string(), o.metadata["rows_by_round"].value, context.instance, keys)},
                o.output_name) for o in merged)
        return merged if len(merged) > 1 else merged[0]

    return asset_fn


def _as_tuple(result: Any) -> tuple:
    """A body's outputs: one, a tuple of them, or those a generator (a multi-asset) yields."""
    if inspect.isgenerator(result):
        return tuple(result)
    return result if isinstance(result, tuple) else (result,)


def _merge(keys: list[str], outputs: list[dg.Output], unique_by: list[str] | None) -> dg.Output:
    """One output from a body's per-round ones (same output name): frames stamped with their
    round and concatenated, the content's data version, metadata as `per_round` says."""
    first = outputs[0]
    if not keys:
        return output(first.value, dict(first.metadata), first.output_name)
    df = pl.concat([o.value.with_columns(pl.lit(k, pl.String).alias("round")) for k, o in zip(keys, outputs)],
                   how="vertical")
    values = [{name: getattr(v, "value", v) for name, v in o.metadata.items()} for o in outputs]
    if len(outputs) == 1:
        metadata = dict(first.metadata)
    else:  # the funnel's totals, and each numeric entry per round in a table
        rows = [{"round": key, **{n: v for n, v in vals.items() if isinstance(v, int | float) and not isinstance(v, bool)}}
                for key, vals in zip(keys, values)]
        columns = list(dict.fromkeys(c for row in rows for c in row))
        metadata = {"rounds": ", ".join(keys), "per_round": dg.MetadataValue.md(md_table(rows, columns)),
                    **{k: sum(vals.get(k, 0) for vals in values) for k in TOTALS if k in values[0]}}
        for k in COUNTS:
            if k in values[0]:
                metadata[k] = dg.MetadataValue.json(dict(sum((Counter(vals.get(k) or {}) for vals in values), Counter())))
    dropped = Counter()
    for vals in values:
        dropped.update(vals.get("dropped") or {})
    if unique_by:
        unique = df.unique(subset=unique_by, keep="first", maintain_order=True)
        dropped["repeated_across_rounds"] += df.height - unique.height
        df = unique
    counts = df.group_by("round").len().sort("round")
    if unique_by:
        metadata["rows_per_round"] = bars(counts["round"].to_list(), counts["len"].to_list(), "rows per round")
    # each round's own count, also when one run made several (stage_yields reads it back)
    metadata["rows_by_round"] = dg.MetadataValue.json(dict(zip(counts["round"].to_list(), counts["len"].to_list())))
    metadata.update({"rows_out": df.height, "dagster/row_count": df.height, "dropped_total": sum(dropped.values()),
                     "dropped": dg.MetadataValue.json(dict(sorted((+dropped).items())))})
    return output(df, metadata, first.output_name)
