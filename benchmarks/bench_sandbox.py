"""Verifier throughput: in-process exec() (as the AutoIF release does) vs the sandbox backends.

    .venv/bin/python benchmarks/bench_sandbox.py [--samples DIR] [--verifiers 200] [--strings 200]
        [--backends docker,host] [--workers 2] [--repeat 3] [--no-cache] [--home AUTOIF_HOME]

Verifiers are the release's own `eval_func` sources from the sample jsonl files, responses
their `gpt-answer` / `response` texts. The samples hold fewer distinct verifiers than asked
for, so copies are made distinct by a trailing comment (each is still compiled and forked
for separately, which is what costs). Every verifier judges every string.

For each backend it prints:
- start-up: the first judge() call of the process (one tiny job per worker), which starts
  the supervisors (containers); they then stay in the pool for later calls (keep_warm);
- steady state (the headline): judge() of the whole workload on started supervisors, the
  best of --repeat passes interleaved with in-process ones, verdicts/s and the ratio to
  in-process's best (and the median of each round's ratio); how many verdicts differ from in-process among the well-behaved
  verifier calls (those in-process judged without error);
- one cold call: start-up plus one steady pass, what a process judging once pays;
- with a verdict cache (unless --no-cache): a first pass that fills a fresh cache (hashing
  and writing included) and a second that finds every verdict there.
With --home (an AUTOIF_HOME after a run, e.g. the default run's), the same comparison on
that run's own work: each kept verifier over every response to its instruction, which is
what `response_verdicts` judges.
The docker backend needs scripts/setup_docker.sh; the host backend needs bubblewrap.
"""

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoif_dagster.home import Home  # noqa: E402
from autoif_dagster.resources.sandbox import SandboxResource, VerifierJob  # noqa: E402
from autoif_dagster.resources.supervisors import shutdown_supervisors  # noqa: E402
from autoif_dagster.sandbox.protocol import EXCEPTION, FAIL, NON_BOOL, PASS, TIMEOUT  # noqa: E402

TEXT_FIELDS = ("gpt-answer", "response")


def harvest(samples: Path) -> tuple[list[str], list[str]]:
    """Distinct verifier sources and response texts from the release's jsonl files, in a
    stable order."""
    sources: dict[str, None] = {}
    texts: dict[str, None] = {}
    for path in sorted(samples.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for entry in record.get("eval_func") or []:  # [[source, score], ...]
                sources[entry[0] if isinstance(entry, list) else entry] = None
            for field in TEXT_FIELDS:
                value = record.get(field)
                for item in value if isinstance(value, list) else [value]:
                    while isinstance(item, list) and item:  # some files nest [text, score]
                        item = item[0]
                    if isinstance(item, str) and item.strip():
                        texts[item] = None
    return list(sources), list(texts)


def home_workload(home: Path) -> list[VerifierJob]:
    """A run's own verifiers over its own responses (see response_verdicts), every round's."""
    from autoif_dagster.resources.io_manager import read_artifact

    assets = Home(home).assets
    frames = {name: read_artifact(assets, name) for name in ("verifiers", "responses", "instruction_prompts")}
    missing = [name for name, frame in frames.items() if frame is None]
    if missing:
        sys.exit(f"{home}: no {', '.join(missing)} under {assets} (run `autoif run --home {home}` first)")
    verifiers = frames["verifiers"]
    responses = frames["responses"].join(frames["instruction_prompts"].select("prompt_id", "instruction_id"),
                                         on="prompt_id")
    texts = {iid: g["response"].to_list() for (iid,), g in responses.group_by("instruction_id")}
    return [VerifierJob(row["func"], texts[row["instruction_id"]])
            for row in verifiers.iter_rows(named=True) if texts.get(row["instruction_id"])]


def build_workload(samples: Path, n_verifiers: int, n_strings: int) -> tuple[list[VerifierJob], int]:
    sources, texts = harvest(samples)
    if not sources or not texts:
        sys.exit(f"no eval_func sources or response texts found under {samples}")
    verifiers = [
        sources[i % len(sources)] + ("" if i < len(sources) else f"\n# copy {i // len(sources)}\n")
        for i in range(n_verifiers)
    ]
    strings = [texts[i % len(texts)] for i in range(n_strings)]
    return [VerifierJob(source, strings) for source in verifiers], len(sources)


# ---------------------------------------------------------------- the release's way


class _Timeout(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def judge_in_process(jobs: list[VerifierJob], timeout_s: int) -> list[list[str]]:
    """exec() each verifier in this process with a SIGALRM guard per call, as the release's
    cross-validation script does. One change: one namespace per verifier instead of the
    release's exec(source, globals(), locals), under which helper functions are invisible to
    evaluate(); the sandbox runs verifiers as modules, and the comparison should be fair."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    results = []
    try:
        for job in jobs:
            namespace: dict = {"__name__": "verifier"}
            try:
                exec(job.source, namespace)
                evaluate = namespace["evaluate"]
            except BaseException:
                results.append([EXCEPTION] * len(job.inputs))
                continue
            verdicts = []
            for text in job.inputs:
                signal.alarm(timeout_s)
                try:
                    result = evaluate(text)
                    verdicts.append(NON_BOOL if type(result) is not bool else PASS if result else FAIL)
                except _Timeout:
                    verdicts.append(TIMEOUT)
                except Exception:
                    verdicts.append(EXCEPTION)
                finally:
                    signal.alarm(0)
            results.append(verdicts)
    finally:
        signal.signal(signal.SIGALRM, previous)
    return results


# ---------------------------------------------------------------- the comparison


def timed(run) -> tuple[float, object]:
    """Seconds of one call of run(), and its result."""
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    default_samples = ROOT.parent / "shared" / "data" / "autoif_sample"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=default_samples, help="the release's sample jsonl files")
    parser.add_argument("--verifiers", type=int, default=200)
    parser.add_argument("--strings", type=int, default=200)
    parser.add_argument("--backends", default="docker,host", help="comma-separated sandbox backends to run")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers (supervisors/containers)")
    parser.add_argument("--timeout-s", type=int, default=5, help="per-call limit (the release's: 5 s)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of timed passes (best reported)")
    parser.add_argument("--no-cache", action="store_true", help="skip the verdict cache passes")
    parser.add_argument("--home", type=Path, help="also: this AUTOIF_HOME's verifiers over its responses")
    args = parser.parse_args()

    own = home_workload(args.home) if args.home else None  # a bad home stops us before any pass
    jobs, distinct = build_workload(args.samples, args.verifiers, args.strings)
    calls = sum(len(job.inputs) for job in jobs)
    print(f"workload: {len(jobs)} verifiers x {args.strings} strings = {calls} calls "
          f"({distinct} distinct release verifiers, the rest copies with a trailing comment); "
          f"best of {args.repeat} passes")
    compare(jobs, args, cache=not args.no_cache)
    if own is not None:
        print(f"\nrealistic mix: {args.home}'s {len(own)} verifiers over their instructions' responses = "
              f"{sum(len(job.inputs) for job in own)} calls")
        compare(own, args, cache=False)


def compare(jobs: list[VerifierJob], args: argparse.Namespace, cache: bool) -> None:
    """In-process exec() and each backend on `jobs`, printed as verdicts/s and ratios.

    The passes interleave (in-process, then each backend, --repeat rounds), so that every
    way meets the same machine: on a shared 2-core VM in-process alone swings by a third
    from minute to minute. Best pass against best pass is the headline; the median of each
    round's own ratio is printed beside it."""
    calls = sum(len(job.inputs) for job in jobs)
    tiny = VerifierJob("def evaluate(response):\n    return True\n", ["a"])
    shutdown_supervisors()  # cold starts, whatever ran before
    sandboxes, startups = {}, {}
    for backend in filter(None, args.backends.split(",")):
        sandbox = SandboxResource(backend=backend, workers=args.workers, timeout_s=args.timeout_s)
        try:
            startups[backend], _ = timed(lambda: sandbox.judge([tiny] * args.workers))
        except RuntimeError as exc:  # no engine, missing image, no bubblewrap...
            print(f"{backend + ' (skipped)':<24} {exc}")
            continue
        sandboxes[backend] = sandbox
    times: dict[str, list[float]] = {way: [] for way in ["in-process", *sandboxes]}
    results: dict[str, object] = {}
    for _ in range(args.repeat):
        seconds, results["in-process"] = timed(lambda: judge_in_process(jobs, args.timeout_s))
        times["in-process"].append(seconds)
        for backend, sandbox in sandboxes.items():
            seconds, results[backend] = timed(lambda: sandbox.judge(jobs))
            times[backend].append(seconds)
    reference = results["in-process"]
    baseline = calls / min(times["in-process"])
    print(f"{'in-process exec()':<24} {baseline:>10,.0f} verdicts/s  1.00x  "
          f"(one thread; kinds: {dict(Counter(k for row in reference for k in row))})")
    for backend, sandbox in sandboxes.items():
        label = f"{backend} ({args.workers} workers)"
        rate = calls / min(times[backend])
        round_ratio = statistics.median(t0 / t for t0, t in zip(times["in-process"], times[backend]))
        well_behaved = differ = 0
        for expected, got in zip(reference, results[backend]):
            for kind, verdict in zip(expected, got):
                if kind in (PASS, FAIL):
                    well_behaved += 1
                    differ += kind != verdict.kind
        print(f"{label:<24} {rate:>10,.0f} verdicts/s  {rate / baseline:.2f}x  steady state, supervisors started "
              f"(median round {round_ratio:.2f}x; {differ} of {well_behaved} well-behaved verdicts differ "
              "from in-process)")
        print(f"{'  start-up':<24} {startups[backend]:>10.2f} s       once per process (pool of {args.workers} "
              f"{'containers' if backend == 'docker' else 'supervisors'})")
        cold = calls / (startups[backend] + min(times[backend]))
        print(f"{'  one cold call':<24} {cold:>10,.0f} verdicts/s  {cold / baseline:.2f}x  start-up + one pass")
        if cache:
            with tempfile.TemporaryDirectory() as scratch:
                cached = sandbox.model_copy(update={"ledger_path": f"{scratch}/ledger.sqlite"})
                filling, (first, stats) = timed(lambda: cached.judge_with_stats(jobs))
                hit, (again, again_stats) = timed(lambda: cached.judge_with_stats(jobs))
                assert again == first and again_stats["executed"] == 0, again_stats
            print(f"{'  cache, first pass':<24} {calls / filling:>10,.0f} verdicts/s  "
                  f"{calls / filling / baseline:.2f}x  fills a fresh cache ({stats['stored']} stored; "
                  "timeouts and crashes are not)")
            print(f"{'  cache, second pass':<24} {calls / hit:>10,.0f} verdicts/s  {calls / hit / baseline:.2f}x  "
                  "every verdict from the cache, nothing executed")
    shutdown_supervisors()


if __name__ == "__main__":
    main()
