"""Prompt tokens the engine need not compute: vLLM's prefix cache per KV block size, on the
recorded default run's own requests.

On this CPU prefill is a third of a stage's time (the quality judge's 68 prompts carry 16K
prompt tokens for 2.9K generated), and the stages' prompts share long prefixes (one system
turn per stage; several samples of the same prompt). vLLM caches whole KV blocks only, and
vLLM-CPU's default block is 128 tokens: a shared 190-token system turn shares one block.

    .venv/bin/python benchmarks/bench_prefix_cache.py [--model M] [--block-sizes 128 32]
        [--max-tokens N] [--max-model-len 4096] [--ledger tests/fixtures/default_run.jsonl.gz]
Per stage and block size: prompt tokens, the share served from the cache, wall seconds, and
the engine process's peak RSS so far.
`--max-tokens` caps every request (1 measures prefill alone); by default each keeps its own.
"""

import argparse
import gzip
import json
import multiprocessing
import resource
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stages(ledger: Path) -> dict[str, list[dict]]:
    """The ledger's requests, by the stage that sent them (named by their first turn)."""
    by_stage: dict[str, list[dict]] = defaultdict(list)
    with gzip.open(ledger, "rt") as f:
        for line in f:
            request = json.loads(line)["request"]
            by_stage[request["messages"][0]["content"][:40]].append(request)
    return dict(by_stage)


def measure(model: str, block_size: int, requests: dict[str, list[dict]], max_tokens: int | None,
            max_model_len: int) -> dict:
    from vllm import SamplingParams

    from autoif_dagster.resources.llm import LLMResource

    # the engine exactly as a run starts it, but for the block size under test
    engine = LLMResource(model=model, max_model_len=max_model_len, cpu_block_size=block_size).engine()
    figures = {}
    for stage, batch in requests.items():
        params = [SamplingParams(max_tokens=max_tokens or r["max_tokens"], temperature=r["temperature"],
                                 top_p=r["top_p"], seed=r["seed"]) for r in batch]
        engine.reset_prefix_cache()  # each stage on its own, as in a run (stages run apart)
        start = time.perf_counter()
        outs = engine.chat([r["messages"] for r in batch], sampling_params=params, use_tqdm=False)
        seconds = time.perf_counter() - start
        prompt = sum(len(o.prompt_token_ids) for o in outs)
        cached = sum(o.num_cached_tokens or 0 for o in outs)
        generated = sum(len(o.outputs[0].token_ids) for o in outs)
        figures[stage] = {"requests": len(batch), "prompt_tokens": prompt, "cached_tokens": cached,
                          "generated_tokens": generated, "seconds": round(seconds, 1),
                          "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[128, 32])
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--ledger", type=Path, default=ROOT / "tests" / "fixtures" / "default_run.jsonl.gz")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--stages", type=int, default=None, help="only the N largest stages")
    args = parser.parse_args()
    requests = stages(args.ledger)
    if args.stages:
        requests = dict(sorted(requests.items(), key=lambda kv: -len(kv[1]))[: args.stages])
    print(f"\n=== prefix cache, {args.model}, max_tokens {args.max_tokens or 'as recorded'} ===")
    for block_size in args.block_sizes:
        # a fresh process per block size: one engine's memory is gone before the next starts
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            figures = pool.submit(measure, args.model, block_size, requests, args.max_tokens, args.max_model_len).result()
        for stage, f in figures.items():
            print(f"block {block_size:4d}  {stage[:30]:30s} {f['requests']:4d} requests  {f['prompt_tokens']:6d} prompt "
                  f"tokens, {100 * f['cached_tokens'] / max(f['prompt_tokens'], 1):5.1f}% cached  "
                  f"{f['generated_tokens']:6d} generated  {f['seconds']:7.1f} s  peak RSS so far {f['peak_rss_gib']} GiB",
                  flush=True)


if __name__ == "__main__":
    main()
