"""The quality judge on labelled answers from real rounds: a prompt edit measured in minutes
instead of a whole run.

Each row of the labelled file (`tests/fixtures/quality_labels.jsonl`: 90 answers of rounds
2026-12-03, -04 and -06, labelled by reading whether they answer their query) is scored with
today's `stages.QUALITY` prompt and scoring settings. Prints how well the expected score ranks
them (AUC, overall and per round), how many of each label reach each bar around
`scoring.min_score`, and the answers the bar gets wrong.

    .venv/bin/python benchmarks/bench_quality_judge.py [--labelled FILE] [--model qwen2.5-coder-1.5b-instruct]
"""

import argparse
import json
from pathlib import Path

from autoif_dagster.assets.llm_stage import run_stage
from autoif_dagster.config import AutoIFConfig
from autoif_dagster.method import parsing, stages
from autoif_dagster.method.audit import ranking_auc
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.vllm_engine import shutdown_engines
from autoif_dagster.resources.models import DEFAULT_SUPERVISOR

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=Path, default=ROOT / "tests" / "fixtures" / "quality_labels.jsonl")
    parser.add_argument("--model", default=DEFAULT_SUPERVISOR)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.labelled.read_text().splitlines()]
    config = AutoIFConfig()
    items = [(i, (r["instruction"], r["query"], r["response"]), config.seed) for i, r in enumerate(rows)]
    run = run_stage(None, LLMResource(model=args.model), stages.QUALITY, items, config.scoring.sampling)
    shutdown_engines()
    expected = {p.item: parsing.expected_score(p.completion.top_logprobs) for p in run.parsed}
    scores = [expected.get(i) or 0.0 for i in range(len(rows))]  # unread: lowest
    labels = [r["answers"] for r in rows]
    print(f"\n=== quality judge, {args.model}, {len(rows)} labelled answers ({sum(labels)} answer their query) ===")
    print(f"AUC {ranking_auc(scores, labels):.3f}; dropped: {dict(run.dropped)}; "
          f"{run.metadata.get('llm_generated_tokens')} tokens in {run.metadata.get('llm_seconds')} s")
    for name in sorted({r["round"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["round"] == name]
        print(f"  round {name}: AUC {ranking_auc([scores[i] for i in idx], [labels[i] for i in idx]):.3f} ({len(idx)} answers)")
    bar = config.scoring.min_score
    print("\n| bar | answers kept | non-answers kept |\n|---|---|---|")
    for b in sorted({bar, bar - 0.4, bar - 0.2, bar + 0.2, bar + 0.4}):
        good = sum(s >= b and y for s, y in zip(scores, labels))
        bad = sum(s >= b and not y for s, y in zip(scores, labels))
        print(f"| {b:.1f}{' (default)' if b == bar else ''} | {good}/{sum(labels)} | {bad}/{len(labels) - sum(labels)} |")
    print(f"\nwrong at the bar {bar}:\n| label | expected score | query | response |\n|---|---|---|---|")
    for r, s in zip(rows, scores):
        if (s >= bar) != r["answers"]:
            print(f"| {'answers' if r['answers'] else 'no answer'} | {s:.2f} | {r['query'][:50]!r} | {r['response'][:80]!r} |")


if __name__ == "__main__":
    main()
