"""The consistency judge on labelled (instruction, back-translation, function) triples: how well
its score ranks them (AUC) and how well its label at the threshold agrees with the reading
(balanced accuracy), beside the embedding judge.

Two labelled files ship: `tests/fixtures/consistency_pairs.jsonl` (40 triples of round
2026-12-05, the set the judge and its threshold were chosen on) and
`benchmarks/data/consistency_heldout.jsonl` (137 triples of four later rounds, read after the
choice: a held-out measure).

    .venv/bin/python benchmarks/bench_consistency_judge.py [--labelled FILE ...] [--model MODEL]
"""

import argparse
import json
from pathlib import Path

from autoif_dagster.method.audit import agreement, ranking_auc
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.vllm_engine import shutdown_engines
from autoif_dagster.resources.models import DEFAULT_SUPERVISOR
from autoif_dagster.resources.nli import NLIResource

ROOT = Path(__file__).resolve().parent.parent
LABELLED = [ROOT / "tests" / "fixtures" / "consistency_pairs.jsonl", ROOT / "benchmarks" / "data" / "consistency_heldout.jsonl"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=Path, action="append", help="labelled JSONL files (default: both shipped)")
    parser.add_argument("--model", default=DEFAULT_SUPERVISOR)
    args = parser.parse_args()
    supervisor = LLMResource(model=args.model)
    for path in args.labelled or LABELLED:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        triples = [(r["instruction"], r["back_translation"], r["func"]) for r in rows]
        same = [r["same"] for r in rows]
        print(f"\n=== {path.name}: {len(rows)} triples, {sum(same)} right, {len(rows) - sum(same)} wrong ===")
        for name, judge in (("llm (default)", NLIResource()), ("embedding", NLIResource(backend="embedding"))):
            judged, stats = judge.judge(triples, supervisor)
            scores = [score if score is not None else 0.0 for _, score, _ in judged]
            agreed = agreement([label == "entailment" for label, _, _ in judged], same)
            seconds = f", {stats['llm_seconds']} s" if stats else ""
            print(f"{name:14} AUC {ranking_auc(scores, same):.3f}  balanced accuracy {agreed.balanced_accuracy:.3f}  "
                  f"right kept {agreed.true_positive}/{sum(same)}, wrong kept {agreed.false_positive}/"
                  f"{len(rows) - sum(same)}{seconds}")
    shutdown_engines()


if __name__ == "__main__":
    main()
