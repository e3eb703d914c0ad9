"""Yield per stage for each embedded model, side by side: same seeds, same scale, same sandbox.

Each model runs the whole graph alone (self-alignment: it is supervisor, NLI judge and
policy), in a fresh AUTOIF_HOME; the table shows every asset's rows out per model, then the
wall time. Pass `--policy-model` to hold the responding model fixed instead.

    .venv/bin/python benchmarks/bench_model_yield.py [--models A B ...] [--config my.yaml]
        [--policy-model NAME] [--sandbox docker]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoif_dagster.resources.models import EMBEDDED_MODELS


def run(model: str, args: argparse.Namespace) -> tuple[list[dict], float, int]:
    home = Path(tempfile.mkdtemp(prefix=f"autoif-yield-{model}-"))
    funnel = home / "funnel.json"
    cmd = [sys.executable, "-m", "autoif_dagster.cli", "run", "--home", str(home), "--funnel-json", str(funnel),
           "--supervisor-model", model, "--sandbox", args.sandbox]
    if args.policy_model:
        cmd += ["--policy-model", args.policy_model]
    if args.config:
        cmd += ["--config", args.config]
    start = time.perf_counter()
    code = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - start
    rows = json.loads(funnel.read_text()) if funnel.exists() else []
    print(f"{model}: exit {code}, {wall / 60:.1f} min, artifacts in {home / 'assets'}", flush=True)
    return rows, wall, code


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(EMBEDDED_MODELS))
    parser.add_argument("--config", help="YAML of method settings (the scale), as for `autoif run --config`")
    parser.add_argument("--policy-model")
    parser.add_argument("--sandbox", default="docker")
    args = parser.parse_args()
    results = {m: run(m, args) for m in args.models}
    assets = list(dict.fromkeys(r["asset"] for rows, _, _ in results.values() for r in rows))
    out = {m: {r["asset"]: r["out"] for r in rows} for m, (rows, _, _) in results.items()}
    width = max(map(len, assets), default=10)
    print(f"\n=== yield per stage (rows out), config {args.config or 'demo defaults'} ===")
    print(f"{'asset':<{width}}  " + "  ".join(f"{m[:28]:>28}" for m in args.models))
    for asset in assets:
        print(f"{asset:<{width}}  " + "  ".join(f"{out[m].get(asset, '-')!s:>28}" for m in args.models))
    print(f"{'wall time (min)':<{width}}  " + "  ".join(f"{results[m][1] / 60:>28.1f}" for m in args.models))
    return max(code for _, _, code in results.values())


if __name__ == "__main__":
    sys.exit(main())
