"""Verifier throughput: in-process exec() (as the AutoIF release does) vs the sandbox backends.

    .venv/bin/python benchmarks/bench_sandbox.py [--samples DIR] [--verifiers 200] [--strings 200]
        [--backends docker,host] [--workers 2]

Verifiers are the release's own `eval_func` sources from the sample jsonl files, responses
their `gpt-answer` / `response` texts. The samples hold fewer distinct verifiers than asked
for, so copies are made distinct by a trailing comment (each is still compiled and forked
for separately, which is what costs). Every verifier judges every string.

Prints verdicts/s for each way, the ratio to in-process, and how many verdicts differ from
in-process among the well-behaved verifier calls (those in-process judged without error).
The docker backend needs scripts/setup_docker.sh; the host backend needs unshare/setpriv.
"""

import argparse
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoif_dagster.resources.sandbox import SandboxResource, VerifierJob  # noqa: E402
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


def main() -> None:
    default_samples = ROOT.parent / "shared" / "data" / "autoif_sample"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=default_samples, help="the release's sample jsonl files")
    parser.add_argument("--verifiers", type=int, default=200)
    parser.add_argument("--strings", type=int, default=200)
    parser.add_argument("--backends", default="docker,host", help="comma-separated sandbox backends to run")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers (supervisors/containers)")
    parser.add_argument("--timeout-s", type=int, default=5, help="per-call limit (the release's: 5 s)")
    args = parser.parse_args()

    jobs, distinct = build_workload(args.samples, args.verifiers, args.strings)
    calls = sum(len(job.inputs) for job in jobs)
    print(f"workload: {len(jobs)} verifiers x {args.strings} strings = {calls} calls "
          f"({distinct} distinct release verifiers, the rest copies with a trailing comment)")

    start = time.perf_counter()
    reference = judge_in_process(jobs, args.timeout_s)
    baseline = calls / (time.perf_counter() - start)
    print(f"{'in-process exec()':<22} {baseline:>10,.0f} verdicts/s  1.00x  "
          f"(one thread; kinds: {dict(Counter(k for row in reference for k in row))})")

    for backend in filter(None, args.backends.split(",")):
        sandbox = SandboxResource(backend=backend, workers=args.workers, timeout_s=args.timeout_s)
        try:
            # Supervisors (containers) live for one judge() call: time a call with one tiny
            # job per worker to tell their start-up from the steady-state throughput.
            start = time.perf_counter()
            sandbox.judge([VerifierJob("def evaluate(response):\n    return True\n", ["a"])] * args.workers)
            startup = time.perf_counter() - start
            start = time.perf_counter()
            results = sandbox.judge(jobs)
        except RuntimeError as exc:  # no engine, missing image, no unshare...
            print(f"{backend:<22} skipped: {exc}")
            continue
        elapsed = time.perf_counter() - start
        rate, steady = calls / elapsed, calls / max(elapsed - startup, 1e-9)
        well_behaved = differ = 0
        for expected, got in zip(reference, results):
            for kind, verdict in zip(expected, got):
                if kind in (PASS, FAIL):
                    well_behaved += 1
                    differ += kind != verdict.kind
        print(f"{backend + f' ({args.workers} workers)':<22} {rate:>10,.0f} verdicts/s  {rate / baseline:.2f}x  "
              f"({differ} of {well_behaved} well-behaved verdicts differ from in-process)")
        print(f"{'  without start-up':<22} {steady:>10,.0f} verdicts/s  {steady / baseline:.2f}x  "
              f"(start-up {startup:.2f} s, judged by a call with one tiny job per worker)")


if __name__ == "__main__":
    main()
