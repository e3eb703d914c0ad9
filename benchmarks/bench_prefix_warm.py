"""K samples of each prompt in one batch, with and without prefilling shared prompts first.

vLLM's prefix cache only serves blocks computed in an earlier engine step, so the K samples
of a prompt scheduled together each prefill it. LLMResource.prefill_shared_once sends every
shared prompt once (one token) before the batch. Same engine, same prompts and seeds; the
prefix cache is emptied before each arm.

    .venv/bin/python benchmarks/bench_prefix_warm.py [--model qwen2.5-coder-1.5b-instruct]
        [--prompts 16] [--k 4] [--max-tokens 64]
"""

import argparse
import time

from autoif_dagster.method.prompts import response_prompt
from bench_engine_peak import batch  # same directory: run as a script
from autoif_dagster.resources.llm import ChatRequest, LLMResource, shutdown_engines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    base = batch(args.prompts, args.max_tokens)
    requests = [
        ChatRequest(response_prompt(r.messages[-1]["content"]), max_tokens=r.max_tokens, temperature=0.7, seed=k)
        for r in base for k in range(args.k)
    ]
    figures = {}
    for warm in (False, True):
        llm = LLMResource(model=args.model, prefill_shared_once=warm)
        llm.engine().reset_prefix_cache()
        start = time.perf_counter()
        out = llm.chat(requests)
        seconds = time.perf_counter() - start
        figures[warm] = (seconds, sum(c.n_tokens for c in out))
    shutdown_engines()
    print(f"\n=== {args.prompts} prompts x {args.k} samples, max_tokens {args.max_tokens}, {args.model} ===")
    for warm, (seconds, tokens) in figures.items():
        print(f"prefill_shared_once={warm!s:5s}  {seconds:6.1f} s  {tokens} tokens  {tokens / seconds:5.1f} tokens/s")
    print(f"speed-up: {figures[False][0] / figures[True][0]:.2f}x")


if __name__ == "__main__":
    main()
