"""Verifier precision of a home's rounds: every kept verifier of a seed with a reference checker
against that checker (checks.reference_audit, what the `verifiers_agree_with_reference_checkers`
check reports in the UI), printed per round with the verifier's source beside its instruction.

    .venv/bin/python benchmarks/bench_verifier_precision.py --home .autoif [--round 2026-12-06 ...]
        [--sandbox docker|host|local]

Without --home, the recorded default run (round 2026-11-01) is replayed into a temporary home
first (seconds, no engine).
"""

import argparse
import tempfile
from pathlib import Path

import polars as pl

from autoif_dagster.checks import reference_audit
from autoif_dagster.home import Home
from autoif_dagster.method.audit import PRECISE, precision
from autoif_dagster.resources.io_manager import read_artifact
from autoif_dagster.resources.sandbox import SandboxResource


def replayed_home(sandbox: SandboxResource) -> Path:
    import dagster as dg

    from autoif_dagster.definitions import all_assets
    from autoif_dagster.replay import replay_resources
    from autoif_dagster.rounds import FIRST_ROUND

    home = Path(tempfile.mkdtemp(prefix="autoif-precision-"))
    keep = ["seed_instructions", "augmented_instructions", "verifier_candidates", "verifiers", "test_cases",
            "back_translations", "nli_verdicts", "consistent_instructions"]
    assert dg.materialize(all_assets, partition_key=FIRST_ROUND, selection=keep,
                          resources=replay_resources(home, sandbox)).success
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path)
    parser.add_argument("--round", action="append", help="rounds to audit (default: every round in the home)")
    parser.add_argument("--sandbox", default="docker")
    args = parser.parse_args()
    sandbox = SandboxResource(backend=args.sandbox)
    home = args.home or replayed_home(sandbox)
    assets = Home(home).assets
    seeds, verifiers, candidates, consistent = (read_artifact(assets, n) for n in (
        "seed_instructions", "verifiers", "verifier_candidates", "consistent_instructions"))
    if seeds is None or verifiers is None or "reference" not in seeds.columns:
        raise SystemExit(f"{home}: no verifiers, or seeds without references: run `autoif run --home {home}` first")
    rounds = args.round or sorted(verifiers["round"].unique().to_list())
    every, used = [], []
    for round_key in rounds:
        rows, problems = reference_audit(sandbox, verifiers.filter(pl.col("round") == round_key), seeds,
                                         candidates.filter(pl.col("round") == round_key))
        share = precision([r["balanced_accuracy"] for r in rows])
        every += rows
        # the verifiers that judge the round's answers: those of instructions the consistency judge kept
        kept = set() if consistent is None else set(consistent.filter(pl.col("round") == round_key)["instruction_id"])
        judging = [r for r in rows if r["instruction_id"] in kept]
        used += judging
        judging_share = precision([r["balanced_accuracy"] for r in judging])
        print(f"\n=== round {round_key}: {len(rows)} verifiers of reference-mapped seeds, "
              f"{'-' if share is None else f'{share:.0%}'} at balanced accuracy >= {PRECISE}; of them "
              f"{len(judging)} judge answers (consistent instructions), "
              f"{'-' if judging_share is None else f'{judging_share:.0%}'} ===")
        instructions = dict(zip(seeds["instruction_id"], seeds["instruction"]))
        funcs = dict(zip(verifiers["verifier_id"], verifiers["func"]))
        for r in sorted(rows, key=lambda r: (r["balanced_accuracy"] or 0)):
            accuracy = "  -  " if r["balanced_accuracy"] is None else f"{r['balanced_accuracy']:.3f}"
            body = " ".join(line.strip() for line in funcs[r["verifier_id"]].splitlines()
                            if not line.lstrip().startswith("def evaluate"))[:150]
            mark = "*" if r in judging else " "
            print(f"{accuracy} {mark} {instructions[r['instruction_id']][:60]:60}  {body}")
        for problem in problems:
            print(f"problem: {problem}")
    share, judging_share = (precision([r["balanced_accuracy"] for r in rows]) for rows in (every, used))
    print(f"\nall rounds: {len(every)} verifiers, precision {'-' if share is None else f'{share:.1%}'}; "
          f"{len(used)} judging answers (* above), precision {'-' if judging_share is None else f'{judging_share:.1%}'}")


if __name__ == "__main__":
    main()
