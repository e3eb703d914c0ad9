"""The engine's own peak: generated tokens/s of one large offline batch, per model and dtype.

The main job's stages are measured against this (bench_main_job.py reads the JSON it
writes): a stage far below its model's peak is sending batches too small to fill the engine.
Prompts are the kind the responses stage sends: a ShareGPT query plus a packaged seed
instruction.

    .venv/bin/python benchmarks/bench_engine_peak.py [--models A B ...] [--n 96] [--max-tokens 64]
        [--dtype float32|bfloat16|auto] [--kv-gib 4] [--out PATH]
Writes benchmarks/results/engine_peak.json ({model: {dtype: tokens/s}}), merged with earlier runs;
`--dtype auto` is what LLMResource picks on this machine (bfloat16 where the CPU has native bf16),
recorded under 'auto' with the dtype it ran in (`engine_dtype`).
"""

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
import sys
import time
from pathlib import Path

from autoif_dagster.method.prompts import instruction_query_prompt
from autoif_dagster.method.selection import sample_for
from autoif_dagster.resources.llm import ChatRequest, LLMResource
from autoif_dagster.resources.vllm_engine import running_dtype, shutdown_engines
from autoif_dagster.resources.models import EMBEDDED_MODELS
from autoif_dagster.sources import load_queries, load_seeds
from bench_main_job import tree_memory  # same directory: run as a script
import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "engine_peak.json"


def batch(n: int, max_tokens: int) -> list[ChatRequest]:
    seeds = load_seeds()
    queries = sample_for("peak", [q for _, q in load_queries() if 20 <= len(q) <= 300], n, seed=0)
    return [ChatRequest([{"role": "user", "content": instruction_query_prompt(seeds[i % len(seeds)], q)}],
                        max_tokens=max_tokens, temperature=0.7, seed=i) for i, q in enumerate(queries)]


def measure(model: str, dtype: str, n: int, max_tokens: int, kv_gib: int) -> dict:
    llm = LLMResource(model=model, dtype=dtype, cpu_kvcache_gib=kv_gib)
    start = time.perf_counter()
    engine = llm.engine()
    startup = time.perf_counter() - start
    engine_dtype, why = running_dtype(engine) or llm.engine_dtype()[0], llm.engine_dtype()[1]
    llm.chat(batch(2, 8))  # warm-up
    requests = batch(n, max_tokens)
    start = time.perf_counter()
    out = llm.chat(requests).completions
    seconds = time.perf_counter() - start
    _, pss, _ = tree_memory(psutil.Process())  # this process and its engine process, KV cache full
    shutdown_engines()
    tokens = sum(c.n_tokens for c in out)
    return {"tokens_per_s": round(tokens / seconds, 1), "tokens": tokens, "seconds": round(seconds, 1),
            "engine_start_s": round(startup, 1), "batch": n, "max_tokens": max_tokens,
            "pss_gib": round(pss / 2**30, 2), "kv_cache_gib": kv_gib, "engine_dtype": engine_dtype, "dtype_why": why}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(EMBEDDED_MODELS))
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (merged into)")
    parser.add_argument("--kv-gib", type=int, default=4, help="KV cache (in the PSS figure)")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    print(f"\n=== engine peak: one batch of {args.n} chat requests, max_tokens {args.max_tokens}, {args.dtype} ===")
    for model in args.models:
        # each model in its own (non-daemonic: vLLM starts processes) process, so one
        # engine's memory is gone before the next starts
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            figures = pool.submit(measure, model, args.dtype, args.n, args.max_tokens, args.kv_gib).result()
        results.setdefault(model, {})[args.dtype] = figures
        print(f"{model:32s} {figures['tokens_per_s']:6.1f} tokens/s  ({figures['tokens']} tokens in "
              f"{figures['seconds']} s; engine start {figures['engine_start_s']} s; {figures['pss_gib']} GiB PSS; "
              f"ran in {figures['engine_dtype']}: {figures['dtype_why']})", flush=True)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
