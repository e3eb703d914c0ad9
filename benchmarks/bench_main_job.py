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


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(RSS, PSS) summed over the process tree. RSS counts pages shared between the processes
    (torch is loaded in three of them) once per process; PSS splits them, so it is the sum
    that matches what the machine really holds."""
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="autoif-bench-"))
    funnel = home / "funnel.json"
    cmd = [sys.executable, "-m", "autoif_dagster.cli", "run", "--home", str(home), "--funnel-json", str(funnel), *sys.argv[1:]]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    ps = psutil.Process(proc.pid)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss, pss = tree_memory(ps)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.2)
    wall = time.perf_counter() - start
    print("\n=== main job benchmark ===")
    print(f"command:        {' '.join(cmd[1:])}")
    print(f"exit code:      {proc.returncode}")
    print(f"wall time:      {wall:.0f} s ({wall / 60:.1f} min; target < 15 min)")
    print(f"peak memory:    {peak_pss / 2**30:.2f} GiB PSS, {peak_rss / 2**30:.2f} GiB RSS "
          "(summed over the process tree; target < 8 GiB)")
    if funnel.exists():
        rows = json.loads(funnel.read_text())
        print(f"assets:         {len(rows)} materialized")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
