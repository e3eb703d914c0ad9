"""Wall time and peak memory of the main job (`autoif run`) at demo scale.

Runs the CLI in a fresh AUTOIF_HOME as a subprocess and samples the resident memory of its
whole process tree (the vLLM engine runs in child processes) every 0.2 s. Prints the figures
and the run's funnel.

    .venv/bin/python benchmarks/bench_main_job.py [--profile demo] [extra `autoif run` args]
Targets (issue #2): under 15 minutes and under 8 GiB peak on a 2-core CPU machine.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="autoif-bench-"))
    funnel = home / "funnel.json"
    cmd = [sys.executable, "-m", "autoif_dagster.cli", "run", "--home", str(home), "--funnel-json", str(funnel), *sys.argv[1:]]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    print("\n=== main job benchmark ===")
    print(f"command:        {' '.join(cmd[1:])}")
    print(f"exit code:      {proc.returncode}")
    print(f"wall time:      {wall:.0f} s ({wall / 60:.1f} min; target < 15 min)")
    print(f"peak memory:    {peak / 2**30:.2f} GiB (whole process tree RSS; target < 8 GiB)")
    if funnel.exists():
        rows = json.loads(funnel.read_text())
        print(f"assets:         {len(rows)} materialized")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
