"""Stage 8-10: responses, their verification in the sandbox, and their quality scores."""

from collections import Counter, defaultdict

import dagster as dg
import polars as pl

from .. import pools
from ..config import AutoIFConfig, ResponseConfig
from ..method import stages
from ..method.parsing import expected_score
from ..method.prompts import SCORE_MAX
from ..method.selection import not_an_answer, pass_rate
from ..resources.llm import LLMResource
from ..resources.sandbox import SandboxResource, VerifierJob
from ..sandbox.protocol import Verdict
from ..rounds import PARTITIONED, per_round
from ..schemas import content_id, frame
from .llm_stage import run_stage
from ..versions import output
from .reporting import funnel, histogram

def held_score() -> pl.Expr:
    """The quality score a response is held to: the expected one where the judge's
    probabilities were read, else the digit it wrote (a backend that returns none). A function,
    not a constant: code versions follow functions (an expression's repr holds an address)."""
    return pl.coalesce("expected_score", pl.col("score").cast(pl.Float64))

GROUP = "responses"


def sampling_plan(prompt_rows: list[dict], cfg: ResponseConfig) -> list[tuple[dict, int, str]]:
    """(prompt row, sample index, user turn) per response to sample: indices below
    samples_per_prompt send the prompt, the next query_only_samples its query alone."""
    n = cfg.samples_per_prompt + cfg.query_only_samples
    return [(p, k, p["prompt"] if k < cfg.samples_per_prompt else p["query"]) for p in prompt_rows for k in range(n)]


@dg.asset(group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU, **PARTITIONED)
@per_round
def responses(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    policy_llm: LLMResource,
    instruction_prompts: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """K sampled responses per instruction-query prompt, from the responding (policy) model,
    and `query_only_samples` more for its query alone (candidate DPO negatives). Unfinished
    (truncated) responses and repeats of a response already sampled for the same prompt are
    dropped: neither is a training sample."""
    cfg = autoif.responses
    jobs = sampling_plan(instruction_prompts.to_dicts(), cfg)
    run = run_stage(context, policy_llm, stages.RESPONSE, [((p, k), (text,), autoif.seed + k) for p, k, text in jobs],
                    cfg.sampling)
    dropped = run.dropped
    rows = []
    seen: set[tuple[str, str]] = set()
    for parsed in run.parsed:
        (p, k), text = parsed.item, parsed.value
        if (p["prompt_id"], text) in seen:
            dropped["duplicate"] += 1
            continue
        seen.add((p["prompt_id"], text))
        rows.append(
            {"response_id": content_id("response", p["prompt_id"], policy_llm.model, k, text),
             "prompt_id": p["prompt_id"], "sample_index": k, "with_instruction": k < cfg.samples_per_prompt,
             "model": policy_llm.model, "generation_id": parsed.completion.generation_id,
             "response": text, "finish_reason": parsed.completion.finish_reason}
        )
    df = frame("responses", rows)
    return output(df, funnel(len(jobs), df, dropped, **run.metadata))


def judge_by_instruction(sandbox: SandboxResource, answers: list[tuple[str, str, str]],
                         verifiers: pl.DataFrame) -> tuple[dict[str, list[tuple[str, Verdict]]], dict]:
    """Each (answer id, instruction id, text) judged by every verifier of its instruction:
    answer id -> [(verifier id, verdict)], and the sandbox's call statistics. One sandbox job
    per verifier over every answer to its instruction: the unit the sandbox forks a worker
    for, so a verifier is compiled once per batch."""
    by_instruction: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for answer_id, instruction_id, text in answers:
        by_instruction[instruction_id].append((answer_id, text))
    funcs: dict[str, list[tuple[str, str]]] = defaultdict(list)  # instruction -> (verifier id, source)
    for v in verifiers.iter_rows(named=True):
        funcs[v["instruction_id"]].append((v["verifier_id"], v["func"]))
    plan = [(iid, vid, f) for iid in by_instruction for vid, f in funcs[iid]]
    results, sandbox_calls = sandbox.judge_with_stats(
        [VerifierJob(f, [text for _, text in by_instruction[iid]]) for iid, _, f in plan], progress=True)
    judged: dict[str, list[tuple[str, Verdict]]] = defaultdict(list)
    for (iid, vid, _), verdicts in zip(plan, results):
        for (answer_id, _), v in zip(by_instruction[iid], verdicts):
            judged[answer_id].append((vid, v))
    return judged, sandbox_calls


@dg.asset(group_name=GROUP, kinds={"polars"}, pool=pools.SANDBOX, **PARTITIONED)
@per_round
def response_verdicts(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    sandbox: SandboxResource,
    responses: pl.DataFrame,
    instruction_prompts: pl.DataFrame,
    verifiers: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Every response judged by every verifier of its instruction; pass rate per response."""
    instruction_of = dict(zip(instruction_prompts["prompt_id"].to_list(), instruction_prompts["instruction_id"].to_list()))
    per_response, sandbox_calls = judge_by_instruction(
        sandbox, [(r["response_id"], instruction_of[r["prompt_id"]], r["response"]) for r in responses.iter_rows(named=True)],
        verifiers)
    rows = []
    error_kinds: Counter = Counter()
    for r in responses.iter_rows(named=True):
        judged = per_response[r["response_id"]]
        verdicts = [v for _, v in judged]
        passed, errors, rate = pass_rate(verdicts)
        error_kinds.update(v.kind for v in verdicts if v.is_error)
        rows.append({"response_id": r["response_id"], "prompt_id": r["prompt_id"], "n_verifiers": len(verdicts),
                     "n_passed": passed, "n_errors": errors, "pass_rate": rate,
                     "verdicts": [{"verifier_id": vid, "kind": v.kind} for vid, v in judged]})
    df = frame("response_verdicts", rows)
    above = int((df["pass_rate"] > autoif.responses.pass_rate_above).sum())
    meta = funnel(responses.height, df, Counter(), passing=above, verifier_errors=dg.MetadataValue.json(dict(error_kinds)),
                  sandbox_calls=dg.MetadataValue.json(sandbox_calls), **sandbox.describe())
    if df.height:
        meta["pass_rate_histogram"] = histogram(df["pass_rate"].to_list(), "pass rate per response", bins=[i / 10 for i in range(11)])
    return output(df, meta)


@dg.asset(group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU, **PARTITIONED)
@per_round
def quality_scores(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    supervisor_llm: LLMResource,
    responses: pl.DataFrame,
    response_verdicts: pl.DataFrame,
    instruction_prompts: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """The supervisor's 0-9 score of whether each passing response answers its query (one that
    only restates the query or asks a question back is dropped unscored, so it is never chosen): the digit
    it wrote, and the score expected under its probabilities for each digit (which separates a
    confident 7 from a hesitant one, where the sampled digit is mostly the same)."""
    cfg = autoif.scoring
    passing = (
        response_verdicts.filter(pl.col("pass_rate") > autoif.responses.pass_rate_above)
        .join(responses.select("response_id", "response"), on="response_id")
        .join(instruction_prompts.select("prompt_id", "instruction", "query"), on="prompt_id")
    )
    rows_in, not_answers = [], Counter()
    for r in passing.iter_rows(named=True):
        why = not_an_answer(r["response"], r["query"], r["instruction"])
        if why:
            not_answers[why] += 1
        else:
            rows_in.append(r)
    run = run_stage(context, supervisor_llm, stages.QUALITY,
                    [(r, (r["instruction"], r["query"], r["response"]), autoif.seed) for r in rows_in], cfg.sampling)
    dropped = run.dropped
    dropped["below_pass_rate"] = response_verdicts.height - passing.height
    dropped.update(not_answers)
    rows = [{"response_id": p.item["response_id"], "prompt_id": p.item["prompt_id"],
             "generation_id": p.completion.generation_id, "score": p.value,
             "expected_score": expected_score(p.completion.top_logprobs), "raw": p.completion.text}
            for p in run.parsed]
    df = frame("quality_scores", rows)
    meta = funnel(response_verdicts.height, df, dropped, **run.metadata)
    if df.height:
        meta["score_histogram"] = histogram(df["score"].to_list(), "sampled quality score",
                                            bins=list(range(SCORE_MAX + 2)))
        expected = df["expected_score"].drop_nulls()
        meta["expected_score_histogram"] = histogram(expected.to_list(), "expected quality score",
                                                     bins=[b / 2 for b in range(2 * SCORE_MAX + 1)])
        meta["expected_score_quantiles"] = dg.MetadataValue.json(
            {q: round(expected.quantile(q / 100), 2) for q in (10, 25, 50, 75, 90)} if expected.len() else {})
        meta["share_at_min_score"] = round(float(df.select((held_score() >= cfg.min_score).mean()).item()), 3)
    return output(df, meta)
