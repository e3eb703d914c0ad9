"""Stage 3-4: verifier candidates, then cross-validation by execution in the sandbox."""

from collections import Counter

import dagster as dg
import polars as pl

from .. import pools
from ..config import AutoIFConfig, CrossValConfig, VerifierConfig
from ..method import stages
from ..method.crossval import CrossValResult, Pool, cross_validate, pool_candidates, probe_counts, settled
from ..resources.llm import LLMResource
from ..resources.sandbox import SandboxResource, VerifierJob
from ..sandbox.protocol import Verdict
from ..rounds import PARTITIONED, per_round
from ..schemas import content_id, frame
from .llm_stage import StageRun, run_stage
from ..versions import output
from .reporting import funnel, md_table

GROUP = "verifiers"


def judge_pools(sandbox: SandboxResource, pools: dict[str, Pool], progress: bool = False):
    """Every function of each pool on every case of its pool and on "" (last: the probe behind
    the accepts-anything counts), in the sandbox -> (instruction id -> verdict rows, stats)."""
    jobs = [VerifierJob(source, [inp for inp, _ in pool.cases] + [""])
            for pool in pools.values() for source in pool.funcs]
    judged, sandbox_calls = sandbox.judge_with_stats(jobs, progress=progress)
    rows = iter(judged)
    return {iid: [next(rows) for _ in pool.funcs] for iid, pool in pools.items()}, sandbox_calls


def cross_validate_pool(cfg: CrossValConfig, pool: Pool, probed: list[list[Verdict]]) -> CrossValResult:
    return cross_validate(
        [label for _, label in pool.cases], [row[:-1] for row in probed],
        min_functions=cfg.min_functions, min_cases=cfg.min_cases,
        case_agreement_above=cfg.case_agreement_above, function_min_accuracy=cfg.function_min_accuracy,
    )


def _next_wave(open_ids: list[str], given: Counter, cfg: VerifierConfig, budget: int) -> dict[str, range]:
    """The sample indices each open instruction gets next: a wave each, the fewest-sampled first
    when the budget runs short."""
    wave: dict[str, range] = {}
    for iid in sorted(open_ids, key=lambda i: given[i]):  # stable: frame order among equals
        n = min(cfg.samples_per_wave, cfg.samples_per_instruction - given[iid], budget)
        if n > 0:
            wave[iid] = range(given[iid], given[iid] + n)
            budget -= n
    return wave


@dg.asset(group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU, **PARTITIONED)
@per_round
def verifier_candidates(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    supervisor_llm: LLMResource,
    sandbox: SandboxResource,
    augmented_instructions: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Generations of `evaluate(response)` plus test cases per instruction, parsed from JSON (the
    raw generation is kept beside the parsed function and cases), asked in waves: every
    instruction gets one; one whose functions do not yet all agree on its pooled cases (judged
    in the sandbox as cross-validation will) gets another, up to samples_per_instruction and
    within the round's budget. Sample k is always asked with the same seed, so a run with
    other wave settings reuses what the ledger holds."""
    cfg = autoif.verifiers
    instructions = {row["instruction_id"]: row for row in augmented_instructions.to_dicts()}
    budget = int(cfg.samples_budget * len(instructions))
    given: Counter = Counter()
    open_ids = list(instructions)
    run, rows, bad_cases, waves, sandbox_calls = StageRun(), [], 0, [], Counter()
    while open_ids and (wave := _next_wave(open_ids, given, cfg, budget - sum(given.values()))):
        items = [((instructions[iid], k), (instructions[iid]["instruction"],), autoif.seed + k)
                 for iid, ks in wave.items() for k in ks]
        given.update({iid: len(ks) for iid, ks in wave.items()})
        wave_run = run_stage(context, supervisor_llm, stages.VERIFIER, items, cfg.sampling,
                             schema_args=(cfg.cases_per_sample,))
        run += wave_run
        for p in wave_run.parsed:
            (row, k), sample, completion = p.item, p.value, p.completion
            bad_cases += sample.bad_cases
            rows.append(
                {
                    "candidate_id": content_id("candidate", row["instruction_id"], completion.generation_id),
                    "instruction_id": row["instruction_id"],
                    "sample_index": k,
                    "generation_id": completion.generation_id,
                    "raw": completion.text,
                    "func": sample.func,
                    "cases": [{"input": i, "output": o} for i, o in sample.cases],
                }
            )
        asked = set(open_ids)
        pools = pool_candidates(r for r in rows if r["instruction_id"] in asked)
        probed, calls = judge_pools(sandbox, pools)
        sandbox_calls.update(calls)
        done = {iid for iid, pool in pools.items()
                if settled(cross_validate_pool(autoif.crossval, pool, probed[iid]), [row[:-1] for row in probed[iid]])}
        waves.append({"wave": len(waves) + 1, "instructions": len(wave), "generations": len(items),
                      "settled": len(done)})
        open_ids = [iid for iid in open_ids if iid not in done and given[iid] < cfg.samples_per_instruction]
        context.log.info(f"verifier wave {len(waves)}: {len(items)} generations for {len(wave)} instructions, "
                         f"{len(done)} settled, {len(open_ids)} open")
    df = frame("verifier_candidates", rows)
    spread = Counter(given[iid] for iid in instructions)
    return output(df, funnel(
        sum(given.values()), df, run.dropped, malformed_cases_dropped=bad_cases,
        waves=dg.MetadataValue.md(md_table(waves, ["wave", "instructions", "generations", "settled"])),
        budget=budget, **({"sandbox_calls": dg.MetadataValue.json(dict(sandbox_calls))} if sandbox_calls else {}),
        instructions_by_generations=dg.MetadataValue.json({str(k): spread[k] for k in sorted(spread)}),
        **run.metadata))


@dg.multi_asset(
    group_name=GROUP,
    pool=pools.SANDBOX,
    **PARTITIONED,
    outs={
        "verifiers": dg.AssetOut(kinds={"polars"},
                                 description="Cross-validated verifier functions with their accuracy."),
        "test_cases": dg.AssetOut(kinds={"polars"},
                                  description="Test cases the instruction's functions agree on."),
    },
)
@per_round
def cross_validation(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    sandbox: SandboxResource,
    verifier_candidates: pl.DataFrame,
):
    """Pool each instruction's distinct functions and cases, run every function on every case
    in the sandbox, keep the cases the functions agree on and the functions accurate on them."""
    pools = pool_candidates(verifier_candidates.iter_rows(named=True))
    probed_by_instruction, sandbox_calls = judge_pools(sandbox, pools, progress=True)
    # pass, fail and each way of failing to judge (exception, timeout, memory, crash...)
    verdict_kinds = Counter(v.kind for rows in probed_by_instruction.values() for row in rows for v in row)

    instruction_drops: Counter = Counter()
    function_drops: Counter = Counter()
    case_drops: Counter = Counter()
    verifier_rows, case_rows = [], []
    # each function's verdicts on its instruction's inputs and on "": all functions, kept ones
    probes: tuple[list, list] = ([], [])
    kept_probes: tuple[list, list] = ([], [])
    for iid, pool in pools.items():
        sources, pooled, probed = list(pool.funcs), list(pool.cases), probed_by_instruction[iid]
        matrix = [row[:-1] for row in probed]
        probes[0].extend(matrix)
        probes[1].extend(row[-1] for row in probed)
        result = cross_validate_pool(autoif.crossval, pool, probed)
        function_drops.update(result.function_drops)
        if result.drop_reason:
            instruction_drops[result.drop_reason] += 1
            function_drops[f"instruction_{result.drop_reason}"] += len(sources) - sum(result.function_drops.values())
            case_drops["instruction_dropped"] += len(pooled)
            continue
        case_drops["below_agreement"] += len(pooled) - len(result.kept_cases)
        for f, accuracy in result.kept_functions:
            kept_probes[0].append(matrix[f])
            kept_probes[1].append(probed[f][-1])
            verifier_rows.append(
                {"verifier_id": content_id("verifier", iid, sources[f]), "instruction_id": iid,
                 "candidate_ids": pool.funcs[sources[f]], "func": sources[f], "accuracy": accuracy}
            )
        for c, agreement in result.kept_cases:
            inp, label = pooled[c]
            case_rows.append(
                {"case_id": content_id("case", iid, inp, label), "instruction_id": iid,
                 "input": inp, "output": label, "agreement": agreement}
            )
    verifiers, test_cases = frame("verifiers", verifier_rows), frame("test_cases", case_rows)
    n_funcs = sum(len(pool.funcs) for pool in pools.values())
    n_cases = sum(len(pool.cases) for pool in pools.values())
    yield output(
        verifiers,
        output_name="verifiers",
        metadata=funnel(
            n_funcs, verifiers, function_drops,
            instructions_in=len(pools),
            instructions_kept=verifiers["instruction_id"].n_unique(),
            instructions_dropped=dg.MetadataValue.json(dict(instruction_drops)),
            probes_all_functions=dg.MetadataValue.json(probe_counts(*probes)),
            probes_kept_verifiers=dg.MetadataValue.json(probe_counts(*kept_probes)),
            sandbox_calls=dg.MetadataValue.json(sandbox_calls),
            verdict_kinds=dg.MetadataValue.json(dict(verdict_kinds)),
            **sandbox.describe(),
        ),
    )
    yield output(test_cases, funnel(n_cases, test_cases, case_drops), output_name="test_cases")
