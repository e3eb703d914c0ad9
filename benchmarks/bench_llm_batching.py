"""Throughput of batched generation vs one request at a time, on the same prompts.

Both go through the project's LLMResource (vLLM offline engine, embedded model by default):
once as one batched call, once as a loop of single-request calls. The prompts are real
instruction-following prompts: IFEval's if a path is given, else ShareGPT queries paired with
the packaged seed instructions.

    .venv/bin/python benchmarks/bench_llm_batching.py [--ifeval ../shared/data/ifeval_input_data.jsonl]
        [--n 32] [--max-tokens 96] [--model smollm2-135m-instruct]
Target (issue #2): batched >= 5x the one-at-a-time throughput.
"""

import argparse
import json
import time

from autoif_dagster.method.prompts import instruction_query_prompt
from autoif_dagster.method.selection import sample_for
from autoif_dagster.resources.llm import ChatRequest, LLMResource
from autoif_dagster.sources import load_queries, load_seeds


def prompts(args: argparse.Namespace) -> list[str]:
    if args.ifeval:
        with open(args.ifeval, encoding="utf-8") as f:
            return [json.loads(line)["prompt"] for line in f][: args.n]
    seeds = load_seeds()
    queries = [q for _, q in load_queries() if 20 <= len(q) <= 300]
    picked = sample_for("bench", queries, args.n, seed=0)
    return [instruction_query_prompt(seeds[i % len(seeds)], q) for i, q in enumerate(picked)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ifeval", help="IFEval input_data.jsonl to take prompts from")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    llm = LLMResource(model=args.model)
    start = time.perf_counter()
    llm.engine()
    startup = time.perf_counter() - start
    # ignore_eos-free sampling at temperature 0: both runs generate the same tokens
    requests = [ChatRequest([{"role": "user", "content": p}], max_tokens=args.max_tokens, temperature=0.0)
                for p in prompts(args)]
    llm.chat(requests[:2])  # warm-up

    start = time.perf_counter()
    batched = llm.chat(requests).completions
    t_batch = time.perf_counter() - start
    start = time.perf_counter()
    single = [llm.chat([r]).completions[0] for r in requests]
    t_single = time.perf_counter() - start

    tok_b, tok_s = sum(c.n_tokens for c in batched), sum(c.n_tokens for c in single)
    rate_b, rate_s = tok_b / t_batch, tok_s / t_single
    same = sum(a.text == b.text for a, b in zip(batched, single))
    print("\n=== LLM batching benchmark ===")
    print(f"model {args.model}; {len(requests)} prompts; max_tokens {args.max_tokens}; engine start {startup:.0f} s")
    print(f"batched:        {tok_b} tokens in {t_batch:.1f} s = {rate_b:.0f} tokens/s")
    print(f"one at a time:  {tok_s} tokens in {t_single:.1f} s = {rate_s:.0f} tokens/s")
    print(f"speed-up:       {rate_b / rate_s:.1f}x (target >= 5x)")
    print(f"identical outputs (greedy): {same}/{len(requests)}")


if __name__ == "__main__":
    main()
