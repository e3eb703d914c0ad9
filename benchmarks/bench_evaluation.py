"""IFEval and IFBench scores of models at demo scale, and what scoring them costs here.

Runs `autoif evaluate` once per model (each in a fresh home: nothing from the ledger), on the
prompt files given (the full sets are the shared IFEval input data and the IFBench dev set on
this machine, which has no Hub), and prints prompt/instruction-level strict/loose scores per
benchmark with the wall time of each.

    .venv/bin/python benchmarks/bench_evaluation.py --ifeval ../shared/data/ifeval_input_data.jsonl \\
        --ifbench ../shared/data/ifbench_dev.jsonl [--models smollm2-135m-instruct ...]
        [--ifeval-prompts 40] [--ifbench-prompts 20]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoif_dagster.resources.models import DEFAULT_BASE


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ifeval", required=True)
    parser.add_argument("--ifbench", required=True)
    parser.add_argument("--models", nargs="+", default=[DEFAULT_BASE])
    parser.add_argument("--ifeval-prompts", type=int, default=40)
    parser.add_argument("--ifbench-prompts", type=int, default=20)
    args = parser.parse_args()
    for model in args.models:
        home = Path(tempfile.mkdtemp(prefix="autoif-eval-"))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "autoif_dagster.cli", "evaluate", "--home", str(home),
                               "--base-model", model, "--ifeval", args.ifeval, "--ifbench", args.ifbench,
                               "--ifeval-prompts", str(args.ifeval_prompts), "--ifbench-prompts",
                               str(args.ifbench_prompts)], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            print(f"{model}: failed\n{proc.stderr[-2000:]}")
            return 1
        table = proc.stdout[proc.stdout.index("| benchmark"):proc.stdout.index("\nrun ")]
        print(f"\n=== {model}: {seconds:.0f} s wall (engine start included) ===\n{table}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
