"""Stage 3-4: verifier candidates, then cross-validation by execution in the sandbox."""

from collections import Counter, defaultdict

import dagster as dg
import polars as pl

from .. import pools
from ..config import AutoIFConfig
from ..method import stages
from ..method.crossval import cross_validate, probe_counts
from ..resources.llm import LLMResource
from ..resources.sandbox import SandboxResource, VerifierJob
from ..rounds import PARTITIONED, per_round
from ..schemas import content_id, frame
from .llm_stage import run_stage
from ..versions import output
from .reporting import funnel

GROUP = "verifiers"


@dg.asset(group_name=GROUP, kinds={"polars", "vllm"}, pool=pools.GPU, **PARTITIONED)
@per_round
def verifier_candidates(
    context: dg.AssetExecutionContext,
    autoif: AutoIFConfig,
    supervisor_llm: LLMResource,
    augmented_instructions: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """K generations per instruction of `evaluate(response)` plus test cases, parsed from JSON
    (the raw generation is kept beside the parsed function and cases)."""
    cfg = autoif.verifiers
    items = [((row, k), (row["instruction"],), autoif.seed + k)
             for row in augmented_instructions.to_dicts() for k in range(cfg.samples_per_instruction)]
    run = run_stage(context, supervisor_llm, stages.VERIFIER, items, cfg.sampling, schema_args=(cfg.cases_per_sample,))
    rows = []
    bad_cases = 0
    for p in run.parsed:
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
    df = frame("verifier_candidates", rows)
    return output(df, funnel(len(items), df, run.dropped, malformed_cases_dropped=bad_cases, **run.metadata))


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
    cfg = autoif.crossval
    funcs: dict[str, dict[str, list[str]]] = defaultdict(dict)  # instruction -> source -> candidate ids
    cases: dict[str, dict[tuple[str, bool], None]] = defaultdict(dict)  # ordered set per instruction
    for row in verifier_candidates.iter_rows(named=True):
        funcs[row["instruction_id"]].setdefault(row["func"], []).append(row["candidate_id"])
        for case in row["cases"]:
            cases[row["instruction_id"]][(case["input"], case["output"])] = None

    order = list(funcs)
    # every function also judges "" (last): the probe behind the accepts-anything counts
    sandbox_jobs = [
        VerifierJob(source, [inp for inp, _ in cases[iid]] + [""]) for iid in order for source in funcs[iid]
    ]
    judged, sandbox_calls = sandbox.judge_with_stats(sandbox_jobs, progress=True)
    # pass, fail and each way of failing to judge (exception, timeout, memory, crash...)
    verdict_kinds = Counter(v.kind for row in judged for v in row)
    verdicts = iter(judged)

    instruction_drops: Counter = Counter()
    function_drops: Counter = Counter()
    case_drops: Counter = Counter()
    verifier_rows, case_rows = [], []
    # each function's verdicts on its instruction's inputs and on "": all functions, kept ones
    probes: tuple[list, list] = ([], [])
    kept_probes: tuple[list, list] = ([], [])
    for iid in order:
        sources, pooled = list(funcs[iid]), list(cases[iid])
        probed = [next(verdicts) for _ in sources]
        matrix = [row[:-1] for row in probed]
        probes[0].extend(matrix)
        probes[1].extend(row[-1] for row in probed)
        result = cross_validate(
            [label for _, label in pooled], matrix,
            min_functions=cfg.min_functions, min_cases=cfg.min_cases,
            case_agreement_above=cfg.case_agreement_above, function_min_accuracy=cfg.function_min_accuracy,
        )
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
                 "candidate_ids": funcs[iid][sources[f]], "func": sources[f], "accuracy": accuracy}
            )
        for c, agreement in result.kept_cases:
            inp, label = pooled[c]
            case_rows.append(
                {"case_id": content_id("case", iid, inp, label), "instruction_id": iid,
                 "input": inp, "output": label, "agreement": agreement}
            )
    verifiers, test_cases = frame("verifiers", verifier_rows), frame("test_cases", case_rows)
    n_funcs = sum(len(v) for v in funcs.values())
    n_cases = sum(len(v) for v in cases.values())
    yield output(
        verifiers,
        output_name="verifiers",
        metadata=funnel(
            n_funcs, verifiers, function_drops,
            instructions_in=len(order),
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
