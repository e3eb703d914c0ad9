"""The quality judge as it is now, on answers it has already judged: a prompt edit measured
in minutes instead of a whole run.

Reads a ledger export (the recorded default run by default), takes every quality-stage
request (instruction, query, response and the score it got), asks the supervisor again with
today's `stages.QUALITY` prompt and the default scoring settings, and prints how many answers
reach the bar (`scoring.min_score`) before (the score written then) and now (the expected
score under the judge's probabilities), the quartiles of the expected scores, and every answer
whose verdict changed.

    .venv/bin/python benchmarks/bench_quality_judge.py [--ledger tests/fixtures/default_run.jsonl.gz]
        [--model qwen2.5-coder-1.5b-instruct]
"""

import argparse
import gzip
import json
import re
from pathlib import Path

from autoif_dagster.assets.llm_stage import run_stage
from autoif_dagster.config import AutoIFConfig
from autoif_dagster.method import parsing, prompts, stages
from autoif_dagster.resources.llm import LLMResource, shutdown_engines

ROOT = Path(__file__).resolve().parent.parent
_FIELDS = re.compile(r"\[Query\] (.*)\n\[Instruction\] (.*)\n\[Response\] (.*)", re.S)


def judged(ledger: Path) -> list[dict]:
    """(instruction, query, response, old score) of each recorded quality request."""
    rows = []
    with gzip.open(ledger, "rt") as f:
        for line in f:
            row = json.loads(line)
            messages = row["request"]["messages"]
            if not messages[0]["content"].startswith(prompts.QUALITY_TASK[:40]):
                continue
            match = _FIELDS.fullmatch(messages[-1]["content"])
            if match is None:
                continue
            try:
                old = parsing.parse_score(row["text"])
            except parsing.ParseError:
                old = None
            query, instruction, response = match.groups()
            rows.append({"instruction": instruction, "query": query, "response": response, "old": old})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ledger", type=Path, default=ROOT / "tests" / "fixtures" / "default_run.jsonl.gz")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    args = parser.parse_args()
    rows = judged(args.ledger)
    config = AutoIFConfig()
    llm = LLMResource(model=args.model)
    items = [(r, (r["instruction"], r["query"], r["response"]), config.seed) for r in rows]
    run = run_stage(None, llm, stages.QUALITY, items, config.scoring.sampling)
    shutdown_engines()
    new = {id(p.item): parsing.expected_score(p.completion.top_logprobs) or p.value for p in run.parsed}
    bar = config.scoring.min_score
    print(f"\n=== quality judge, {args.model}, {len(rows)} recorded answers, bar >= {bar} ===")
    print(f"before: {sum((r['old'] or 0) >= bar for r in rows)} pass; now: {sum(new.get(id(r), 0) >= bar for r in rows)} "
          f"pass; dropped now: {dict(run.dropped)}; {run.metadata.get('llm_generated_tokens')} tokens in "
          f"{run.metadata.get('llm_seconds')} s")
    scores = sorted(new.values())
    if scores:
        print("expected scores, quartiles:", [round(scores[int(q * (len(scores) - 1))], 2) for q in (0.25, 0.5, 0.75)])
    print("\n| before | now | instruction | response |\n|---|---|---|---|")
    for r in rows:
        now = new.get(id(r))
        if ((r["old"] or 0) >= bar) != ((now or 0) >= bar):
            print(f"| {r['old']} | {now if now is None else round(now, 2)} | {r['instruction'][:50]} | {r['response'][:90]!r} |")


if __name__ == "__main__":
    main()
