"""Evaluation: IFEval and IFBench prompts, and each model's answers scored by the official
checkers (evaluation.py): the base model, and each checkpoint beside it (a table against the
base on its page; `checks.beats_base` warns when it scores below it)."""

import dagster as dg
import polars as pl

from .. import evaluation, pools
from ..config import EvaluationConfig
from ..resources.checkpoints import Checkpoint
from ..resources.llm import ChatRequest, LLMResource
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


def score_model(context: dg.AssetExecutionContext, llm: LLMResource, prompts: pl.DataFrame,
                cfg: EvaluationConfig, base: pl.DataFrame | None = None) -> dg.Output[pl.DataFrame]:
    """One model's answers to every benchmark prompt (greedy, as lm-eval's IFEval task
    decodes), judged by the official checkers; the four scores per benchmark in metadata,
    and with `base` (the base model's scored answers) a table of both and their difference."""
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
    table = []
    meta: dict = {}
    for (benchmark,), part in df.group_by("benchmark", maintain_order=True):
        figures = evaluation.scores(part.to_dicts())
        table.append({"benchmark": benchmark, "prompts": part.height, **{m: f"{v:.3f}" for m, v in figures.items()}})
        meta.update({f"{benchmark}/{m}": dg.MetadataValue.float(round(v, 4)) for m, v in figures.items()})
    meta["scores"] = dg.MetadataValue.md(md_table(table, ["benchmark", "prompts", *evaluation.METRICS]))
    if base is not None:
        rows_vs = evaluation.against_base(base.to_dicts(), df.to_dicts())
        meta["against_base"] = dg.MetadataValue.md(md_table(
            [{**r, **{k: f"{r[k]:+.3f}" if k == "delta" else f"{r[k]:.3f}" for k in ("base", "model", "delta")}}
             for r in rows_vs], ["benchmark", "metric", "base", "model", "delta"]))
    meta["truncated"] = int((df["finish_reason"] == "length").sum()) if df.height else 0
    return output(df, {"rows_out": df.height, "dagster/row_count": df.height, "model": model, **meta,
                       **result.metadata()})


@dg.asset(group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU)
def base_benchmark_scores(context: dg.AssetExecutionContext, evaluation_config: EvaluationConfig,
                          base_llm: LLMResource, benchmark_prompts: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The base model (the one training starts from) on IFEval and IFBench: what every
    checkpoint is compared against."""
    return score_model(context, base_llm, benchmark_prompts, evaluation_config)


def checkpoint_scores(checkpoint: str) -> dg.AssetsDefinition:
    """The asset scoring one training asset's checkpoint like the base, served by base_llm's
    engine settings: a whole model as the model, an adapter on its base (LLMResource.adapter)."""
    name = f"{checkpoint.removesuffix('_checkpoint')}_benchmark_scores"

    @dg.asset(name=name, group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU,
              ins={"checkpoint": dg.AssetIn(checkpoint), "base_benchmark_scores": dg.AssetIn()},
              description=f"{checkpoint} on IFEval and IFBench, beside the base model (against_base).")
    def scores(context: dg.AssetExecutionContext, evaluation_config: EvaluationConfig, base_llm: LLMResource,
               benchmark_prompts: pl.DataFrame, checkpoint: Checkpoint,
               base_benchmark_scores: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        return score_model(context, base_llm.serving(checkpoint), benchmark_prompts, evaluation_config,
                           base=base_benchmark_scores)

    return scores


checkpoint_benchmark_scores = [checkpoint_scores(name) for name in CHECKPOINT_ARTIFACTS]
