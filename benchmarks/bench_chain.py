"""The whole chain after the data, as a user runs it: `autoif train` timed, then every model's
IFEval and IFBench scores with their 95% intervals, each checkpoint's paired difference to the
base, and instruction-level accuracy on the types the data covers beside the rest.

The data: an existing home (`--home`: e.g. several rounds made by `autoif run --round
FIRST:LAST`), or, without one, the recorded default run replayed into a fresh home
(bench_training.replay: its completions, no engine). Then `autoif train` trains the SFT,
offline-DPO, online-DPO and GRPO checkpoints on the base model and scores the base and each
(real engine, real sandbox). `--report-only` prints the figures of a home trained before.

    .venv/bin/python benchmarks/bench_chain.py --ifeval ../shared/data/ifeval_input_data.jsonl \\
        --ifbench ../shared/data/ifbench_dev.jsonl [--home HOME] [--full] [--sandbox docker] [--report-only]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_training import replay  # noqa: E402

MODELS = ("base", "sft", "dpo", "online_dpo", "grpo")


def report(home: Path, resamples: int = 2000) -> None:
    """Every scored model of `home`: scores with intervals, differences to the base, covered types."""
    import polars as pl

    from autoif_dagster import evaluation
    from autoif_dagster.assets.reporting import md_table

    assets = home / "assets"
    scored = {m: pl.read_parquet(assets / f"{m}_benchmark_scores.parquet").to_dicts()
              for m in MODELS if (assets / f"{m}_benchmark_scores.parquet").exists()}
    covered = {(r["benchmark"], r["checker"])
               for r in pl.read_parquet(assets / "covered_instruction_types.parquet").to_dicts()}
    print(f"\ncovered instruction types ({len(covered)}): {', '.join(sorted(c for _, c in covered))}\n")
    scores = [{"model": model, "benchmark": benchmark, "prompts": len(part),
               **{m: e.text() for m, e in evaluation.bootstrap(part, resamples=resamples).items()}}
              for model, rows in scored.items() for benchmark, part in evaluation.by_benchmark(rows).items()]
    print(md_table(scores, ["model", "benchmark", "prompts", *evaluation.METRICS]))
    base = scored.get("base")
    checkpoints = {model: rows for model, rows in scored.items() if model != "base"}
    if base is None or not checkpoints:
        return
    deltas = {}
    for model, rows in checkpoints.items():
        for r in evaluation.against_base(base, rows, resamples=resamples):
            deltas.setdefault((model, r["benchmark"]), {"model": model, "benchmark": r["benchmark"]})[r["metric"]] = (
                evaluation.Estimate(r["delta"], r["delta_low"], r["delta_high"]).text(signed=True))
    print("\nDifference to the base (paired over the same prompts; 95% interval):\n")
    print(md_table(list(deltas.values()), ["model", "benchmark", *evaluation.METRICS]))
    covered_rows = [{"model": model, "types": f"{r['types']} ({r['n_types']})", "instructions": r["instructions"],
                     "strict": r["strict"].text(), "loose": r["loose"].text(),
                     "loose - base": r["delta_loose"].text(signed=True)}
                    for model, rows in checkpoints.items()
                    for r in evaluation.covered_summary(rows, covered, base, resamples=resamples)
                    if r["benchmark"] == "all"]
    print("\nInstruction-level accuracy on the covered types and the rest, both benchmarks pooled:\n")
    print(md_table(covered_rows, ["model", "types", "instructions", "strict", "loose", "loose - base"]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ifeval", required=True)
    parser.add_argument("--ifbench", required=True)
    parser.add_argument("--home", type=Path, help="a home with data (default: the recorded run, replayed)")
    parser.add_argument("--full", action="store_true", help="every prompt of both benchmarks")
    parser.add_argument("--ifeval-prompts", type=int, default=40)
    parser.add_argument("--ifbench-prompts", type=int, default=20)
    parser.add_argument("--sandbox", default="docker")
    parser.add_argument("--report-only", action="store_true", help="print the figures of a trained home")
    args = parser.parse_args()
    if args.report_only:
        report(args.home)
        return 0
    home = args.home or Path(tempfile.mkdtemp(prefix="autoif-chain-"))
    if args.home is None:
        start = time.perf_counter()
        replay(home)
        print(f"replayed the default run's data into {home} in {time.perf_counter() - start:.0f} s", flush=True)
    prompts = ["--full"] if args.full else ["--ifeval-prompts", str(args.ifeval_prompts),
                                            "--ifbench-prompts", str(args.ifbench_prompts)]
    start = time.perf_counter()
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "autoif"), "train", "--home", str(home),
                           "--ifeval", args.ifeval, "--ifbench", args.ifbench, *prompts, "--sandbox", args.sandbox])
    print(f"\n`autoif train`: {time.perf_counter() - start:.0f} s wall (exit {done.returncode})")
    if done.returncode == 0:
        report(home)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
