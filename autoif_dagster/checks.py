"""Asset checks: what must hold of every artifact, and what must hold before data reaches a
trainer. The blocking ones stop the run: assets downstream of a failed one do not run.

- every asset: its declared schema, and ids that are present and unique;
- `verifiers`: no kept verifier accepts every test input of its instruction (both labels); and,
  measured, not enforced: each kept verifier of a seed with a reference checker against that
  checker (balanced accuracy), the round's share of precise verifiers (warns below 90%);
- `sft_dataset`: not empty; every response passes its instruction's verifiers when judged
  again; the newest round's yield did not collapse against the round before it (with one
  round: against the previous materialization);
- `dpo_pairs`: not empty; every chosen response beats its rejected one by the method's rule;
  the yield did not collapse;
- each checkpoint's benchmark scores: none below the base model's beyond noise, i.e. no paired
  interval of a difference wholly below 0 (a warning: a small model trained for a few steps may
  well not gain, and that is a finding, not a broken run).

The rules are plain functions (tested without Dagster); the checks load, judge and report.
"""

import json
from collections import defaultdict

import dagster as dg
import polars as pl

from . import evaluation, pools
from .assets.reporting import md_table
from .config import AutoIFConfig, EvaluationConfig
from .method import audit
from .method.selection import pass_rate, sample_for
from .resources.sandbox import SandboxResource, VerifierJob
from .sandbox.protocol import FAIL, PASS
from .rounds import ALL_ROUNDS, ROUNDS
from .schemas import COMBINED, PRIMARY_KEYS, SCHEMAS, SCORE_ARTIFACTS


# A yield below this share of the previous materialization's is a collapse, not noise.
COLLAPSE_BELOW = 0.5
SHOWN = 5  # offending rows listed in a check's metadata


def schema_problems(name: str, df: pl.DataFrame) -> list[str]:
    """Differences from the declared schema, and missing or repeated ids."""
    problems = []
    if df.schema != SCHEMAS[name]:
        problems.append(f"schema {dict(df.schema)} is not the declared {dict(SCHEMAS[name])}")
        return problems
    key = PRIMARY_KEYS[name]
    if (nulls := df[key].null_count()):
        problems.append(f"{nulls} rows without a {key}")
    if "round" in df.columns and (nulls := df["round"].null_count()):
        problems.append(f"{nulls} rows without a round")
    # ids are content fingerprints: unique within a round (another round may make the same row)
    scope = [key, "round"] if "round" in df.columns else [key]
    repeated = df.select(scope).drop_nulls().is_duplicated()
    if repeated.any():
        problems.append(f"{key} repeated: {df.drop_nulls(scope).filter(repeated)[key].unique().head(SHOWN).to_list()}")
    return problems


def accepting_everything(verifiers: pl.DataFrame, verdicts: list[list[bool]]) -> list[str]:
    """Ids of verifiers that passed every one of their test inputs (verdicts[i]: verifier i's)."""
    return [vid for vid, row in zip(verifiers["verifier_id"].to_list(), verdicts) if row and all(row)]


def unordered_pairs(pairs: pl.DataFrame, chosen_min: float, rejected_max: float) -> list[str]:
    """Ids of pairs whose chosen response does not beat the rejected one: the chosen below the
    bar, the rejected above its cap, or both the same text."""
    bad = pairs.filter(
        (pl.col("chosen_pass_rate") < chosen_min) | (pl.col("rejected_pass_rate") > rejected_max)
        | (pl.col("chosen_pass_rate") <= pl.col("rejected_pass_rate")) | (pl.col("chosen") == pl.col("rejected"))
    )
    return bad["pair_id"].to_list()


def collapsed(rows: int, previous: int | None) -> bool:
    """Whether `rows` is a collapse against the previous yield (no previous: it cannot be)."""
    return previous is not None and previous > 0 and rows < COLLAPSE_BELOW * previous


def _result(problems: list[str], **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": "; ".join(problems) or "none", **metadata})


def _schema_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=name, name="schema_and_ids", blocking=True, partitions_def=partitions_of(name),
                    description=f"{name} has its declared schema and a present, unique {PRIMARY_KEYS[name]}.")
    def check(frame: pl.DataFrame) -> dg.AssetCheckResult:
        return _result(schema_problems(name, frame), rows=frame.height)

    return check


def partitions_of(name: str) -> dg.PartitionsDefinition | None:
    return ROUNDS if "round" in SCHEMAS[name] and name not in COMBINED else None


@dg.asset_check(asset="verifiers", blocking=True, additional_ins={"test_cases": dg.AssetIn()}, partitions_def=ROUNDS,
                pool=pools.SANDBOX, description="No kept verifier accepts every test input of its instruction.")
def no_verifier_accepts_everything(sandbox: SandboxResource, verifiers: pl.DataFrame,
                                   test_cases: pl.DataFrame) -> dg.AssetCheckResult:
    inputs = {iid: g["input"].to_list() for (iid,), g in test_cases.group_by("instruction_id")}
    jobs = [VerifierJob(row["func"], inputs.get(row["instruction_id"], []))
            for row in verifiers.iter_rows(named=True)]
    judged = sandbox.judge(jobs)  # the verdicts cross-validation stored: ledger hits
    bad = accepting_everything(verifiers, [[v.passed for v in row] for row in judged])
    return _result([f"{len(bad)} verifiers accept every test input: {bad[:SHOWN]}"] if bad else [],
                   verifiers=verifiers.height)


AUDIT_TEXTS = 60  # the round's test inputs each verifier and its reference judge (before edits)


def reference_audit(sandbox: SandboxResource, verifiers: pl.DataFrame, seed_instructions: pl.DataFrame,
                    verifier_candidates: pl.DataFrame) -> tuple[list[dict], list[str]]:
    """One row per kept verifier of a seed with a reference checker: its agreement with the
    checker over the round's test inputs (every instruction's, AUDIT_TEXTS of them) and their
    edits for the checker's rule; and the problems met (a reference that does not fit its
    checker, a checker that raised on a text), each named, none fatal."""
    references = {row["instruction_id"]: json.loads(row["reference"])
                  for row in seed_instructions.iter_rows(named=True) if row["reference"]}
    inputs = sorted({case["input"] for cases in verifier_candidates["cases"].to_list() for case in cases})
    texts = sample_for("reference-audit", inputs, AUDIT_TEXTS, 0)
    problems: list[str] = []
    by_instruction: dict[str, tuple[list[str], list[bool]]] = {}  # instruction -> (texts, the reference's verdicts)
    for iid in sorted(set(verifiers["instruction_id"].to_list()) & set(references)):
        reference, judged, verdicts = references[iid], [], []
        for text in audit.pool(texts, reference):
            try:
                verdicts.append(evaluation.reference_verdict(reference, text))
                judged.append(text)
            except Exception as exc:  # a misfit reference fails on every text: name it once
                problems.append(f"reference {reference['checker']} of {iid}: {type(exc).__name__}: {exc}")
                if not verdicts:
                    break
        by_instruction[iid] = judged, verdicts
    audited = verifiers.filter(pl.col("instruction_id").is_in(list(by_instruction))).to_dicts()
    judged = sandbox.judge([VerifierJob(row["func"], by_instruction[row["instruction_id"]][0]) for row in audited])
    rows = []
    for row, verdicts in zip(audited, judged):
        agreed = audit.agreement([v.passed for v in verdicts], by_instruction[row["instruction_id"]][1])
        rows.append({"verifier_id": row["verifier_id"], "instruction_id": row["instruction_id"],
                     "checker": references[row["instruction_id"]]["checker"],
                     "balanced_accuracy": agreed.balanced_accuracy, "texts": len(verdicts),
                     "errors": sum(v.kind not in (PASS, FAIL) for v in verdicts), **vars(agreed)})
    return rows, list(dict.fromkeys(problems))


@dg.asset_check(asset="verifiers", additional_ins={"seed_instructions": dg.AssetIn(), "verifier_candidates": dg.AssetIn()},
                partitions_def=ROUNDS, pool=pools.SANDBOX,
                description="Kept verifiers of seeds with a reference checker (IFEval's or IFBench's, checking the "
                "seed exactly) against that checker on the round's texts and their edits: balanced accuracy each, "
                "and the share at or above 0.9 (warns below; measures, decides nothing).")
def verifiers_agree_with_reference_checkers(sandbox: SandboxResource, verifiers: pl.DataFrame,
                                            seed_instructions: pl.DataFrame,
                                            verifier_candidates: pl.DataFrame) -> dg.AssetCheckResult:
    rows, problems = reference_audit(sandbox, verifiers, seed_instructions, verifier_candidates)
    share = audit.precision([r["balanced_accuracy"] for r in rows])
    instructions = dict(zip(seed_instructions["instruction_id"], seed_instructions["instruction"]))
    funcs = dict(zip(verifiers["verifier_id"], verifiers["func"]))
    table = [{**r, "instruction": instructions[r["instruction_id"]], "func": funcs[r["verifier_id"]],
              "balanced_accuracy": "-" if r["balanced_accuracy"] is None else round(r["balanced_accuracy"], 3)}
             for r in sorted(rows, key=lambda r: (r["balanced_accuracy"] or 0, r["verifier_id"]))]
    return dg.AssetCheckResult(
        passed=share is None or share >= audit.PRECISE, severity=dg.AssetCheckSeverity.WARN,
        metadata={"verifier_precision": share if share is not None else "no verifier to measure",
                  "audited_verifiers": len(rows),
                  "audit": dg.MetadataValue.md(md_table(table, ["balanced_accuracy", "instruction", "func", "checker",
                                                                "true_positive", "false_negative", "true_negative",
                                                                "false_positive", "errors"], 70)),
                  "problems": "; ".join(problems) or "none"})


def _not_empty(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=name, name="not_empty", blocking=True, description=f"{name} has rows.")
    def check(frame: pl.DataFrame) -> dg.AssetCheckResult:
        return _result([] if frame.height else [f"{name} is empty: see the funnel for where the rows went"])

    return check


def latest_rounds(df: pl.DataFrame) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """(newest round, its rows) and (the round before it, its rows) in a combined dataset;
    None with fewer than two rounds."""
    counts = df.group_by("round").len().sort("round").rows()
    return (counts[-1], counts[-2]) if len(counts) > 1 else None


def _yield_held(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=name, name="yield_held", blocking=True,
                    description=f"{name}'s newest round has at least {COLLAPSE_BELOW:.0%} of the rows of the round "
                    "before it (with one round: of the previous materialization).")
    def check(context: dg.AssetCheckExecutionContext, frame: pl.DataFrame) -> dg.AssetCheckResult:
        rounds = latest_rounds(frame)
        if rounds is not None:
            (newest, rows), (before, previous) = rounds
            problems = [f"round {newest}: {rows} rows, down from {previous} in round {before}"] if collapsed(
                rows, previous) else []
            return _result(problems, rows=rows, previous_rows=previous, compared=f"round {newest} vs {before}")
        records = context.instance.fetch_materializations(dg.AssetKey(name), limit=2).records
        # the newest is the one this check follows; the one before it is the previous yield
        previous = None
        if len(records) > 1:
            count = records[1].asset_materialization.metadata.get("dagster/row_count")
            previous = int(count.value) if count is not None else None
        problems = [f"{frame.height} rows, down from {previous}"] if collapsed(frame.height, previous) else []
        return _result(problems, rows=frame.height, previous_rows=previous if previous is not None else -1,
                       compared="previous materialization")

    return check


@dg.asset_check(asset="sft_dataset", blocking=True, additional_ins={"verifiers": ALL_ROUNDS}, pool=pools.SANDBOX,
                description="Every SFT response passes its instruction's verifiers when judged again.")
def sft_responses_pass_their_verifiers(autoif: AutoIFConfig, sandbox: SandboxResource, sft_dataset: pl.DataFrame,
                                       verifiers: pl.DataFrame) -> dg.AssetCheckResult:
    funcs: dict[tuple[str, str], list[str]] = defaultdict(list)  # (round, instruction) -> its verifiers
    for row in verifiers.iter_rows(named=True):
        funcs[row["round"], row["instruction_id"]].append(row["func"])
    rows = sft_dataset.to_dicts()
    jobs, owners = [], []
    for i, row in enumerate(rows):
        answer = row["messages"][-1]["content"]
        for func in funcs.get((row["round"], row["instruction_id"]), []):
            jobs.append(VerifierJob(func, [answer]))
            owners.append(i)
    verdicts: dict[int, list] = defaultdict(list)
    for owner, (verdict,) in zip(owners, sandbox.judge(jobs)):
        verdicts[owner].append(verdict)
    failing = [row["sample_id"] for i, row in enumerate(rows)
               if pass_rate(verdicts.get(i, []))[2] <= autoif.responses.pass_rate_above]
    return _result([f"{len(failing)} responses fail their verifiers: {failing[:SHOWN]}"] if failing else [],
                   rejudged=len(rows))


@dg.asset_check(asset="dpo_pairs", blocking=True,
                description="Every chosen response beats its rejected one (the method's pass-rate rule).")
def chosen_beats_rejected(autoif: AutoIFConfig, dpo_pairs: pl.DataFrame) -> dg.AssetCheckResult:
    bad = unordered_pairs(dpo_pairs, autoif.dpo.chosen_min_pass_rate, autoif.dpo.rejected_max_pass_rate)
    return _result([f"{len(bad)} pairs out of order: {bad[:SHOWN]}"] if bad else [], pairs=dpo_pairs.height)


def below_base(base: pl.DataFrame, model: pl.DataFrame, *, resamples: int = 2000, confidence: float = 0.95,
               seed: int = 0) -> tuple[list[str], list[str]]:
    """The scores (benchmark/metric) where the model is below the base: those whose paired
    interval of the difference lies wholly below 0, and those below within the noise (the
    interval reaches 0 or above), each with both figures and the interval."""
    rows = evaluation.against_base(base.to_dicts(), model.to_dicts(), resamples=resamples, confidence=confidence,
                                   seed=seed)
    said = [(r, f"{r['benchmark']}/{r['metric']} {r['model']:.3f} < base {r['base']:.3f} "
                f"(delta {r['delta']:+.3f} [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}])")
            for r in rows if r["delta"] < 0]
    return [t for r, t in said if r["delta_high"] < 0], [t for r, t in said if r["delta_high"] >= 0]


def _beats_base(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=name, name="beats_base", additional_ins={"base_benchmark_scores": dg.AssetIn()},
                    description=f"{name}: no IFEval or IFBench score below the base model's beyond noise (the "
                    "difference's paired interval wholly below 0; warns).")
    def check(evaluation_config: EvaluationConfig, frame: pl.DataFrame,
              base_benchmark_scores: pl.DataFrame) -> dg.AssetCheckResult:
        cfg = evaluation_config  # the asset's own bootstrap settings: the same intervals as its page
        worse, within_noise = below_base(base_benchmark_scores, frame, resamples=cfg.bootstrap_resamples,
                                         confidence=cfg.confidence, seed=cfg.seed)
        return dg.AssetCheckResult(passed=not worse, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"below_base": "; ".join(worse) or "none",
                                             "below_base_within_noise": "; ".join(within_noise) or "none"})

    return check


all_checks = [
    *(_schema_check(name) for name in PRIMARY_KEYS),
    no_verifier_accepts_everything,
    verifiers_agree_with_reference_checkers,
    *(_not_empty(name) for name in COMBINED),
    *(_yield_held(name) for name in COMBINED),
    sft_responses_pass_their_verifiers,
    chosen_beats_rejected,
    *(_beats_base(name) for name in SCORE_ARTIFACTS if name != "base_benchmark_scores"),
]
