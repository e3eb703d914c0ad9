"""Sandbox throughput against another git revision's, side by side on the same machine.

    .venv/bin/python benchmarks/bench_sandbox_against.py REV [--backends docker,host]
        [--rounds 10] [--workers 2] [--samples DIR]

bench_sandbox.py's ratio to in-process exec() drifts with the machine: on the shared 2-core VM
the same code measured 0.49-0.61x one week and 0.42x the next. Whether a change made the
sandbox slower is only answered by running both versions at the same time. REV is checked out
into a temporary git worktree (its sandbox image built by its own scripts/setup_docker.sh,
which needs root), and for each backend one worker process per version keeps its supervisors
warm and judges bench_sandbox's workload when asked. Each round runs an in-process pass, then
one pass of each version, in alternating order. Printed per backend: each version's median
and best ratio to the round's in-process pass, its median CPU time per verifier job (all
processes: /proc/stat), and the median of the per-round ratio between the two versions.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLES = ROOT.parent / "shared" / "data" / "autoif_sample"


def busy_jiffies() -> tuple[int, int]:
    """(all CPU time but steal, idle time) so far, in jiffies, over every CPU."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(fields[:7]), fields[3] + fields[4]


def worker(tree: Path, backend: str, workers: int, samples: Path) -> None:
    """Judge the workload with `tree`'s code whenever a line comes in; print seconds and CPU
    milliseconds per job."""
    sys.path.insert(0, str(tree / "benchmarks"))
    from bench_sandbox import build_workload  # also puts `tree` first on sys.path

    import autoif_dagster
    from autoif_dagster.resources.sandbox import SandboxResource

    if not Path(autoif_dagster.__file__).resolve().is_relative_to(tree.resolve()):
        print(f"unavailable: imported {autoif_dagster.__file__}, not {tree}'s", flush=True)
        return
    jobs, _ = build_workload(samples, 200, 200)
    sandbox = SandboxResource(backend=backend, workers=workers, timeout_s=5)
    try:
        sandbox.judge(jobs[:workers])  # start the supervisors
    except RuntimeError as exc:
        print(f"unavailable {exc}", flush=True)
        return
    print("ready", flush=True)
    cpus = len([line for line in open("/proc/stat") if line[:3] == "cpu" and line[3].isdigit()])
    for _ in sys.stdin:
        (total0, idle0), start = busy_jiffies(), time.perf_counter()
        sandbox.judge(jobs)
        seconds = time.perf_counter() - start
        total1, idle1 = busy_jiffies()
        busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
        print(seconds, busy * cpus * seconds / len(jobs) * 1000, flush=True)


def checkout(rev: str, into: Path, docker: bool) -> Path:
    tree = into / "tree"
    added = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                           capture_output=True, text=True)
    if added.returncode != 0:
        sys.exit(f"cannot check out {rev!r}: {(added.stderr.strip().splitlines() or ['git failed'])[-1]}")
    if docker:
        build = subprocess.run(["bash", "scripts/setup_docker.sh"], cwd=tree, capture_output=True, text=True)
        if build.returncode != 0:
            print(f"{rev}: its sandbox image could not be built: {build.stderr.strip()[-300:]}")
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", nargs="?", help="the git revision to compare with (a commit, tag or branch)")
    parser.add_argument("--backends", default="docker,host")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    parser.add_argument("--worker", nargs=2, metavar=("TREE", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), args.worker[1], args.workers, args.samples.resolve())
        return
    if args.rev is None:
        parser.error("the revision to compare with is required")

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_sandbox import build_workload, judge_in_process

    jobs, _ = build_workload(args.samples, 200, 200)
    backends = [b for b in args.backends.split(",") if b]
    with tempfile.TemporaryDirectory(prefix="autoif-against-") as scratch:
        trees = {args.rev: checkout(args.rev, Path(scratch), "docker" in backends), "this tree": ROOT}
        try:
            for backend in backends:
                compare(backend, trees, jobs, args, judge_in_process)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[args.rev])],
                           capture_output=True)


def compare(backend: str, trees: dict[str, Path], jobs, args: argparse.Namespace, judge_in_process) -> None:
    procs = {}
    for name, tree in trees.items():
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(tree), backend, "--workers",
                                 str(args.workers), "--samples", str(args.samples.resolve())],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline().strip()
        if line != "ready":
            print(f"{backend} ({name}): skipped: {line or 'the worker died'}")
            proc.kill()
            for other in procs.values():
                other.kill()
            return
        procs[name] = proc
    ratios = {name: [] for name in procs}
    cpu = {name: [] for name in procs}
    for round_ in range(args.rounds):
        start = time.perf_counter()
        judge_in_process(jobs, 5)
        in_process = time.perf_counter() - start
        for name in list(procs)[:: 1 if round_ % 2 == 0 else -1]:
            procs[name].stdin.write("go\n")
            procs[name].stdin.flush()
            seconds, ms_per_job = map(float, procs[name].stdout.readline().split())
            ratios[name].append(in_process / seconds)
            cpu[name].append(ms_per_job)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    print(f"{backend}, {args.workers} workers, {args.rounds} rounds of {len(jobs)} verifiers x 200 strings:")
    for name in procs:
        print(f"  {name:<20} {statistics.median(ratios[name]):.2f}x in-process (median; best "
              f"{max(ratios[name]):.2f}x), {statistics.median(cpu[name]):.2f} ms CPU per job")
    old, new = (ratios[name] for name in procs)
    print(f"  this tree / {list(procs)[0]}: {statistics.median(n / o for o, n in zip(old, new)):.2f} "
          "(median of the rounds' own ratios)")


if __name__ == "__main__":
    main()
