"""The whole chain after the data, as a user runs it: `autoif train` on the default run's data,
timed, with every checkpoint's training time and the IFEval/IFBench scores of the base and
each checkpoint.

The data is the recorded default run replayed into a fresh home (bench_training.replay: its
completions, no engine; a cold `autoif run` makes the same data in ~15 minutes, README). Then
`autoif train` trains the SFT, offline-DPO and online-DPO checkpoints on the base model and
scores the base and each on the demo subsets (real engine, real sandbox).

    .venv/bin/python benchmarks/bench_chain.py --ifeval ../shared/data/ifeval_input_data.jsonl \\
        --ifbench ../shared/data/ifbench_dev.jsonl [--sandbox docker] [--ifeval-prompts 40] [--ifbench-prompts 20]
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ifeval", required=True)
    parser.add_argument("--ifbench", required=True)
    parser.add_argument("--ifeval-prompts", type=int, default=40)
    parser.add_argument("--ifbench-prompts", type=int, default=20)
    parser.add_argument("--sandbox", default="docker")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="autoif-chain-"))
    start = time.perf_counter()
    replay(home)
    print(f"replayed the default run's data into {home} in {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "autoif"), "train", "--home", str(home),
                           "--ifeval", args.ifeval, "--ifbench", args.ifbench,
                           "--ifeval-prompts", str(args.ifeval_prompts), "--ifbench-prompts", str(args.ifbench_prompts),
                           "--sandbox", args.sandbox])
    print(f"\n`autoif train`: {time.perf_counter() - start:.0f} s wall (exit {done.returncode})")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
