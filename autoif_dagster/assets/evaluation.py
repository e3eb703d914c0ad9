"""Evaluation: IFEval and IFBench prompts, and each model's answers scored by the official
checkers (evaluation.py): the base model, and each checkpoint beside it (a table against the
base on its page, every score and difference with its bootstrap interval; `checks.beats_base`
warns when a difference's interval lies wholly below 0), and the instruction types the training
data covers (covered_instruction_types), so a checkpoint's page shows its accuracy on them."""

import json

import dagster as dg
import polars as pl

from .. import evaluation, pools
from ..config import EvaluationConfig
from ..resources.checkpoints import Checkpoint
from ..resources.llm import ChatRequest, LLMResource
from ..rounds import ALL_ROUNDS
from ..schemas import CHECKPOINT_ARTIFACTS, frame
from ..versions import output
from .reporting import md_table

GROUP = "evaluation"


@dg.asset(group_name=GROUP, kinds={"polars"})
def benchmark_prompts(context: dg.AssetExecutionContext, evaluation_config: EvaluationConfig) -> dg.Output[pl.DataFrame]:
    """The IFEval and IFBench prompts every model is scored on: a seeded subset of each at demo
    scale (the full sets as config), from local files or the Hugging Face Hub."""
    cfg = evaluation_config
    rows, meta = [], {}
    for benchmark, path, n in (("ifeval", cfg.ifeval_path, cfg.ifeval_prompts),
                               ("ifbench", cfg.ifbench_path, cfg.ifbench_prompts)):
        if n == 0:
            continue
        every = evaluation.load_prompts(benchmark, path)
        chosen = evaluation.subset(every, n, cfg.seed)
        rows += [{"prompt_id": f"{benchmark}:{r['key']}", **r} for r in chosen]
        meta[f"{benchmark}_prompts"] = len(chosen)
        meta[f"{benchmark}_available"] = len(every)
        meta[f"{benchmark}_source"] = path or evaluation.BENCHMARKS[benchmark]
        context.log.info(f"{benchmark}: {len(chosen)} of {len(every)} prompts")
    df = frame("benchmark_prompts", rows)
    return output(df, {"rows_out": df.height, "dagster/row_count": df.height, **meta})


@dg.asset(group_name=GROUP, kinds={"polars"},
          ins={"seed_instructions": dg.AssetIn(), "instruction_prompts": ALL_ROUNDS})
def covered_instruction_types(seed_instructions: pl.DataFrame,
                              instruction_prompts: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The IFEval and IFBench instruction types (checker ids) the training data covers: a seed
    whose reference names the checker has prompts in the data of some round (it was kept as
    consistent: instruction_prompts), whatever the checker's arguments. Only seeds carry a
    reference; the instructions the supervisor wrote (augmented) are not mapped to a type, even
    where one says the same as a benchmark's, so the covered set is a lower bound."""
    trained = set(instruction_prompts["instruction_id"].to_list())
    rows = evaluation.covered_types(seed_instructions.to_dicts(), trained)
    df = frame("covered_instruction_types", rows)
    referenced = seed_instructions.filter(pl.col("reference").is_not_null())
    untrained = [json.loads(r)["checker"] for i, r in zip(referenced["instruction_id"], referenced["reference"])
                 if i not in trained]
    return output(df, {
        "rows_out": df.height, "dagster/row_count": df.height,
        "seeds_with_reference": referenced.height, "instructions_in_the_data": len(trained),
        **{f"{b}_types": int((df["benchmark"] == b).sum()) for b in evaluation.BENCHMARKS},
        "types": dg.MetadataValue.md(md_table(
            [{**r, "instructions": len(r["instruction_ids"])} for r in rows], ["benchmark", "checker", "instructions"])),
        # a seed's type with no prompts in the data: its instruction was dropped on the way
        "not_covered": ", ".join(sorted(set(untrained) - set(df["checker"].to_list()))) or "none",
    })


def _figure(x: float) -> str:
    return f"{x:.3f}"


def score_model(context: dg.AssetExecutionContext, llm: LLMResource, prompts: pl.DataFrame,
                cfg: EvaluationConfig, base: pl.DataFrame | None = None,
                covered: pl.DataFrame | None = None) -> dg.Output[pl.DataFrame]:
    """One model's answers to every benchmark prompt (greedy, as lm-eval's IFEval task
    decodes), judged by the official checkers; in metadata the four scores per benchmark with
    their bootstrap intervals, and the instruction-level accuracy per instruction type. With
    `base` (the base model's scored answers on the same prompts) a table of both with the
    difference's paired interval, and the difference per type; with `covered`
    (covered_instruction_types) which types the training data covers, and the accuracy over
    those against the rest."""
    rows_in = prompts.to_dicts()
    requests = [ChatRequest([{"role": "user", "content": r["prompt"]}], max_tokens=cfg.max_tokens,
                            temperature=0.0, top_p=1.0, seed=cfg.seed) for r in rows_in]
    result = llm.chat(requests, context=context)
    model = llm.model if llm.adapter is None else f"{llm.model}+{llm.adapter}"  # a checkpoint's adapter on its base
    rows = []
    for r, c in zip(rows_in, result.completions):
        # a refused request is scored as an empty answer: it followed nothing
        verdict = evaluation.judge(r, "" if c.finish_reason == "error" else c.text)
        rows.append({"prompt_id": r["prompt_id"], "benchmark": r["benchmark"], "model": model,
                     "generation_id": c.generation_id, "response": c.text, "finish_reason": c.finish_reason,
                     "instruction_id_list": r["instruction_id_list"], **verdict})
    name = context.asset_key.path[-1]
    df = frame(name, rows)
    meta = score_metadata(df.to_dicts(), cfg, None if base is None else base.to_dicts(),
                          None if covered is None else covered.to_dicts())
    meta["truncated"] = int((df["finish_reason"] == "length").sum()) if df.height else 0
    return output(df, {"rows_out": df.height, "dagster/row_count": df.height, "model": model, **meta,
                       **result.metadata()})


def score_metadata(verdicts: list[dict], cfg: EvaluationConfig, base: list[dict] | None = None,
                   covered: list[dict] | None = None) -> dict:
    """What a score asset shows of its judged answers (see score_model): markdown tables
    (scores, against_base, per_type, covered_vs_rest) and the figures as floats
    (BENCHMARK/METRIC with _low and _high; against the base BENCHMARK/METRIC_delta with
    _delta_low and _delta_high; covered/ and rest/ instruction_strict and instruction_loose,
    each with _delta, _delta_low and _delta_high, over both benchmarks)."""
    boot = {"resamples": cfg.bootstrap_resamples, "confidence": cfg.confidence, "seed": cfg.seed}
    meta: dict = {"confidence": cfg.confidence, "bootstrap_resamples": cfg.bootstrap_resamples}
    table = []
    for benchmark, part in evaluation.by_benchmark(verdicts).items():
        figures = evaluation.bootstrap(part, **boot)
        table.append({"benchmark": benchmark, "prompts": len(part), **{m: e.text() for m, e in figures.items()}})
        for m, e in figures.items():
            meta.update({f"{benchmark}/{m}{end}": dg.MetadataValue.float(round(x, 4))
                         for end, x in (("", e.value), ("_low", e.low), ("_high", e.high))})
    meta["scores"] = dg.MetadataValue.md(md_table(table, ["benchmark", "prompts", *evaluation.METRICS]))
    if base is not None:
        vs = evaluation.against_base(base, verdicts, **boot)
        meta["against_base"] = dg.MetadataValue.md(md_table(
            [{"benchmark": r["benchmark"], "metric": r["metric"], "base": _figure(r["base"]),
              "model": _figure(r["model"]),
              "delta": evaluation.Estimate(r["delta"], r["delta_low"], r["delta_high"]).text(signed=True)} for r in vs],
            ["benchmark", "metric", "base", "model", "delta"]))
        for r in vs:
            meta.update({f"{r['benchmark']}/{r['metric']}_{k}": dg.MetadataValue.float(round(r[k], 4))
                         for k in ("delta", "delta_low", "delta_high")})
    covered_set = None if covered is None else {(r["benchmark"], r["checker"]) for r in covered}
    types = evaluation.per_type(verdicts, base, covered_set or (), **boot)
    columns = ["benchmark", "type", *(["covered"] if covered_set is not None else []), "n", "strict", "loose",
               *(["Δ strict", "Δ loose"] if base is not None else [])]

    def delta(r: dict, name: str) -> str:
        if r[f"delta_{name}_low"] is None:  # too few instructions of the type for an interval
            return f"{r[f'delta_{name}']:+.3f}"
        interval = evaluation.Estimate(r[f"delta_{name}"], r[f"delta_{name}_low"], r[f"delta_{name}_high"])
        return interval.text(signed=True)

    meta["per_type"] = dg.MetadataValue.md(md_table(
        [{**r, "covered": "yes" if r["covered"] else "no", "strict": _figure(r["strict"]), "loose": _figure(r["loose"]),
          **({"Δ strict": delta(r, "strict"), "Δ loose": delta(r, "loose")} if base is not None else {})}
         for r in sorted(types, key=lambda r: (r["benchmark"], not r["covered"], r["type"]))], columns))
    if covered_set is not None:
        summary = evaluation.covered_summary(verdicts, covered_set, base, **boot)
        meta["covered_vs_rest"] = dg.MetadataValue.md(md_table(
            [{**r, "strict": r["strict"].text(), "loose": r["loose"].text(),
              **({"base strict": _figure(r["base_strict"].value), "Δ strict": r["delta_strict"].text(signed=True),
                  "Δ loose": r["delta_loose"].text(signed=True)} if base is not None else {})} for r in summary],
            ["benchmark", "types", "n_types", "prompts", "instructions", "strict", "loose",
             *(["base strict", "Δ strict", "Δ loose"] if base is not None else [])]))
        meta["covered/types"] = len(covered_set)
        for types_ in ("covered", "rest"):
            meta[f"{types_}/instructions"] = 0
        for r in summary:
            if r["benchmark"] != "all":
                continue
            meta[f"{r['types']}/instructions"] = r["instructions"]
            for name in ("strict", "loose"):
                figures = {"": r[name].value}
                if base is not None:
                    d = r[f"delta_{name}"]
                    figures.update({"_delta": d.value, "_delta_low": d.low, "_delta_high": d.high})
                meta.update({f"{r['types']}/instruction_{name}{end}": dg.MetadataValue.float(round(x, 4))
                             for end, x in figures.items()})
    return meta


@dg.asset(group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU)
def base_benchmark_scores(context: dg.AssetExecutionContext, evaluation_config: EvaluationConfig,
                          base_llm: LLMResource, benchmark_prompts: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The base model (the one training starts from) on IFEval and IFBench: what every
    checkpoint is compared against. It does not read covered_instruction_types: `autoif
    evaluate` scores a base in a home without data; each checkpoint's page shows the base's
    accuracy on the covered types beside its own."""
    return score_model(context, base_llm, benchmark_prompts, evaluation_config)


def checkpoint_scores(checkpoint: str) -> dg.AssetsDefinition:
    """The asset scoring one training asset's checkpoint like the base, served by base_llm's
    engine settings: a whole model as the model, an adapter on its base (LLMResource.adapter)."""
    name = f"{checkpoint.removesuffix('_checkpoint')}_benchmark_scores"

    @dg.asset(name=name, group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU,
              ins={"checkpoint": dg.AssetIn(checkpoint), "base_benchmark_scores": dg.AssetIn(),
                   "covered_instruction_types": dg.AssetIn()},
              description=f"{checkpoint} on IFEval and IFBench, beside the base model (against_base, "
              "covered_vs_rest).")
    def scores(context: dg.AssetExecutionContext, evaluation_config: EvaluationConfig, base_llm: LLMResource,
               benchmark_prompts: pl.DataFrame, checkpoint: Checkpoint, base_benchmark_scores: pl.DataFrame,
               covered_instruction_types: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        return score_model(context, base_llm.serving(checkpoint), benchmark_prompts, evaluation_config,
                           base=base_benchmark_scores, covered=covered_instruction_types)

    return scores


checkpoint_benchmark_scores = [checkpoint_scores(name) for name in CHECKPOINT_ARTIFACTS]
