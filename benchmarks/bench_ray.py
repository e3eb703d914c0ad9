"""Ray's cost and gain on this machine: sandbox verdicts/s and generated tokens/s in-process and
on a local Ray cluster of 1 and 2 worker nodes, on the same work.

    .venv/bin/python benchmarks/bench_ray.py --home HOME [--round R] [--backend docker]
        [--copies 40] [--prompts 32] [--max-tokens 64] [--model smollm2-135m-instruct]

The work is a finished run's (HOME, e.g. a default run's): for the sandbox, what its
`response_verdicts` judged (each kept verifier over every response to its instruction), made
`--copies` times larger with distinct copies of each source; for generation, the first
`--prompts` of its `instruction_prompts`, answered with `--max-tokens` by `--model`. No ledger:
everything runs. Each Ray figure is the second call on started actors (the first, which starts
them, is printed beside it); in-process figures are on a started engine and warm supervisors.
Ray gives each actor one CPU (OMP_NUM_THREADS=1): an engine replica computes on one core,
where the in-process engine uses all of them.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sandbox_work(home: Path, round_key: str, copies: int) -> list:
    import polars as pl

    from autoif_dagster.resources.io_manager import read_artifact
    from autoif_dagster.resources.sandbox import VerifierJob

    verifiers = read_artifact(home / "assets", "verifiers").filter(pl.col("round") == round_key)
    responses = read_artifact(home / "assets", "responses").filter(pl.col("round") == round_key)
    prompts = read_artifact(home / "assets", "instruction_prompts").filter(pl.col("round") == round_key)
    texts = responses.join(prompts.select("prompt_id", "instruction_id"), on="prompt_id")
    by_instruction = {k[0]: g["response"].to_list() for k, g in texts.group_by("instruction_id")}
    return [VerifierJob(f"{row['func']}\n# copy {c}\n", by_instruction.get(row["instruction_id"], []))
            for c in range(copies) for row in verifiers.iter_rows(named=True)]


def gone_within(seconds: float) -> None:
    """Wait for the last cluster's actor processes to exit: an engine replica outlives its
    raylet by a while, spinning on its cores, and took 5/6 of the next cluster's throughput."""
    import psutil

    deadline = time.time() + seconds
    while time.time() < deadline and any(p.info["name"].startswith("ray::") for p in psutil.process_iter(["name"])):
        time.sleep(1)


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def on_ray(nodes: int, jobs: list, verdicts: int, requests: list, args: argparse.Namespace) -> list:
    """The figures on a local cluster of `nodes` worker nodes (two Ray CPUs each: room for an
    engine replica and a sandbox worker)."""
    import ray
    from ray.cluster_utils import Cluster

    from autoif_dagster.resources.llm import LLMResource
    from autoif_dagster.resources.sandbox import SandboxResource

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="autoif", log_to_driver=False)
    sandbox = SandboxResource(backend="ray", ray_node_backend=args.backend, workers=nodes, timeout_s=5.0)
    first, _ = timed(lambda: sandbox.judge(jobs))
    seconds, _ = timed(lambda: sandbox.judge(jobs))
    rows = [("sandbox", f"ray, {nodes} worker node(s), {nodes} worker(s)", verdicts / seconds, verdicts / first)]
    replicas = LLMResource(model=args.model, backend="ray", replicas=nodes)
    first, result = timed(lambda: replicas.chat(requests))
    first_rate = result.stats.tokens / first
    seconds, result = timed(lambda: replicas.chat(requests))
    rows.append(("generation", f"ray, {nodes} worker node(s), {nodes} replica(s)", result.stats.tokens / seconds,
                 first_rate))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--round", help="default: the home's only round")
    parser.add_argument("--backend", default="docker", choices=["docker", "host", "local"])
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--ray-nodes", type=int, help=argparse.SUPPRESS)  # internal: one cluster's figures
    args = parser.parse_args()

    import platform

    import polars as pl

    from autoif_dagster.resources.io_manager import read_artifact
    from autoif_dagster.resources.llm import ChatRequest, LLMResource
    from autoif_dagster.resources.sandbox import SandboxResource

    prompts = read_artifact(args.home / "assets", "instruction_prompts")
    round_key = args.round or prompts["round"].unique().to_list()[0]
    jobs = sandbox_work(args.home, round_key, args.copies)
    verdicts = sum(len(job.inputs) for job in jobs)
    requests = [ChatRequest([{"role": "user", "content": p}], max_tokens=args.max_tokens, temperature=0.7, seed=i)
                for i, p in enumerate(prompts.filter(pl.col("round") == round_key)["prompt"].to_list()[:args.prompts])]
    if not args.ray_nodes:
        print(f"{platform.processor() or platform.machine()}; work: {verdicts} verdicts ({len(jobs)} jobs), "
              f"{len(requests)} requests of {args.max_tokens} tokens to {args.model}", flush=True)

    if args.ray_nodes:
        print(json.dumps(on_ray(args.ray_nodes, jobs, verdicts, requests, args)))
        return 0
    rows = []
    local = SandboxResource(backend=args.backend, timeout_s=5.0, workers=2)
    local.judge(jobs[:2])  # supervisors started
    seconds, _ = timed(lambda: local.judge(jobs))
    rows.append(("sandbox", "in-process (2 supervisors)", verdicts / seconds, None))
    llm = LLMResource(model=args.model)
    llm.engine()
    seconds, result = timed(lambda: llm.chat(requests))
    rows.append(("generation", "in-process (1 engine, all cores)", result.stats.tokens / seconds, None))
    from autoif_dagster.resources.vllm_engine import shutdown_engines

    shutdown_engines()

    for nodes in (1, 2):  # each cluster in a process of its own: nothing of the last one left running
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--ray-nodes", str(nodes)],
                             capture_output=True, text=True, check=True).stdout
        rows += [tuple(row) for row in json.loads(out.strip().splitlines()[-1])]
        gone_within(120)

    print(f"\n{'work':11} {'where':42} {'per second':>11} {'first call':>11}  vs in-process")
    base = {kind: rate for kind, where, rate, _ in rows if where.startswith("in-process")}
    for kind, where, rate, first in rows:
        unit = "verdicts" if kind == "sandbox" else "tokens"
        print(f"{kind:11} {where:42} {rate:8.1f} {unit[:3]} {'' if first is None else f'{first:8.1f}':>11}  "
              f"{rate / base[kind]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
