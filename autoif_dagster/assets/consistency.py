"""Stage 5-6: back-translate verifiers into instructions and keep instructions whose
verifiers mean what they say (no back-translation contradicts the original)."""

from collections import Counter

import dagster as dg
import polars as pl

from .. import pools
from ..config import AutoIFConfig
from ..method import prompts
from ..method import stages
from ..method.selection import dedupe_key, is_consistent, plainly_wrong
from ..resources.llm import LLMResource
from ..resources.nli import NLIResource
from ..rounds import PARTITIONED, per_round
from ..schemas import content_id, frame
from .llm_stage import run_stage
from ..versions import output
from .reporting import funnel, histogram

GROUP = "consistency"
_EXAMPLE_INSTRUCTIONS = {dedupe_key(text) for text, _ in prompts.VERIFIER_EXAMPLES}


@dg.asset(group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU, **PARTITIONED)
@per_round
def back_translations(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    supervisor_llm: LLMResource,
    verifiers: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """The supervisor rewrites each instruction's most accurate functions (up to N) back into
    instructions."""
    cfg = autoif.back_translation
    chosen = (
        verifiers.sort(["accuracy", "verifier_id"], descending=[True, False])
        .group_by("instruction_id", maintain_order=True)
        .head(cfg.per_instruction)
        .to_dicts()
    )
    run = run_stage(context, supervisor_llm, stages.BACK_TRANSLATION,
                    [(v, (v["func"],), autoif.seed) for v in chosen], cfg.sampling)
    dropped = run.dropped
    rows = []
    for p in run.parsed:
        v, text = p.item, p.value
        if dedupe_key(text) in _EXAMPLE_INSTRUCTIONS:  # says what the example checks, not this function
            dropped["copied_prompt_example"] += 1
            continue
        rows.append(
            {"back_translation_id": content_id("back_translation", v["verifier_id"], text),
             "instruction_id": v["instruction_id"], "verifier_id": v["verifier_id"],
             "generation_id": p.completion.generation_id, "back_translation": text}
        )
    df = frame("back_translations", rows)
    return output(df, funnel(len(chosen), df, dropped, **run.metadata))


@dg.asset(group_name=GROUP, kinds={"polars"}, pool=pools.GPU, **PARTITIONED)
@per_round
def nli_verdicts(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    nli: NLIResource,
    supervisor_llm: LLMResource,
    augmented_instructions: pl.DataFrame,
    verifiers: pl.DataFrame,
    back_translations: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """The consistency judge's label of each back-translated function: whether it checks what
    its instruction says (resources/nli.py), with the judge's score. A function that plainly checks
    something else (selection.plainly_wrong: its back-translation states other units, drops the
    scope...; it repeats a check; it names text or an emoji the instruction never gave) is a
    contradiction without asking the judge (score None)."""
    pairs = (back_translations.join(augmented_instructions.select("instruction_id", "instruction"), on="instruction_id")
             .join(verifiers.select("verifier_id", "func"), on="verifier_id"))
    triples = list(zip(pairs["instruction"].to_list(), pairs["back_translation"].to_list(), pairs["func"].to_list()))
    plainly_other = [plainly_wrong(*triple) for triple in triples]
    asked, stats = nli.judge([t for t, other in zip(triples, plainly_other) if not other],
                             supervisor_llm, seed=autoif.seed, context=context)
    answers = iter(asked)
    judgements = [("contradiction", None, None) if other else next(answers) for other in plainly_other]
    dropped: Counter = Counter()
    rows = []
    for row, (label, score, reason) in zip(pairs.iter_rows(named=True), judgements):
        if label is None:
            dropped[reason] += 1
            continue
        rows.append({"back_translation_id": row["back_translation_id"], "instruction_id": row["instruction_id"],
                     "label": label, "score": score})
    df = frame("nli_verdicts", rows)
    labels = dict(Counter(df["label"].to_list()))
    meta = funnel(pairs.height, df, dropped, labels=dg.MetadataValue.json(labels),
                  plainly_other_requirement=dg.MetadataValue.json(dict(Counter(filter(None, plainly_other)))),
                  **nli.describe(supervisor_llm), **stats)
    if df["score"].drop_nulls().len():
        meta["score_histogram"] = histogram(df["score"].drop_nulls().to_list(), "consistency judge score", bins=20)
    return output(df, meta)


@dg.asset(group_name=GROUP, kinds={"polars"}, **PARTITIONED)
@per_round
def consistent_instructions(
    context: dg.AssetExecutionContext,
    augmented_instructions: pl.DataFrame,
    verifiers: pl.DataFrame,
    nli_verdicts: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Instructions with cross-validated verifiers and no contradicting back-translation."""
    labels: dict[str, list[str]] = {}
    for row in nli_verdicts.iter_rows(named=True):
        labels.setdefault(row["instruction_id"], []).append(row["label"])
    n_verifiers = dict(verifiers.group_by("instruction_id").len().iter_rows())
    dropped: Counter = Counter()
    rows = []
    for row in augmented_instructions.iter_rows(named=True):
        iid = row["instruction_id"]
        if iid not in n_verifiers:
            dropped["no_verifier"] += 1
        elif iid not in labels:
            dropped["no_judged_back_translation"] += 1
        elif not is_consistent(labels[iid]):
            dropped["contradiction"] += 1
        else:
            rows.append({"instruction_id": iid, "instruction": row["instruction"], "n_verifiers": n_verifiers[iid]})
    df = frame("consistent_instructions", rows)
    return output(df, funnel(augmented_instructions.height, df, dropped))
