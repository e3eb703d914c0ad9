"""Our IFEval verdicts beside lm-evaluation-harness's, on the same answers.

lm-eval's IFEval task is what most users compare against. This judges every answer twice:
with ours (evaluation.judge: if-verifiable's checkers) and with lm-eval's own scoring code
(lm_eval/tasks/ifeval/utils.py `process_results`, its instruction registry, and the
aggregations its ifeval.yaml names), then prints how many per-instruction verdicts agree,
strict and loose, which instruction types differ and why (a checker's random draw, or
if-verifiable's preprocessing of the answer), and both sets of the four scores.

Answers: the Parquet `base_benchmark_scores` an `autoif evaluate` run writes under
AUTOIF_HOME/assets/ (that file, or the directory), or JSONL with `key` (or `prompt`, as in
Google's response files) and `response`. Prompts: the IFEval input data (JSONL as published).

    .venv/bin/python benchmarks/bench_lm_eval_agreement.py --ifeval ../shared/data/ifeval_input_data.jsonl \\
        --answers AUTOIF_HOME/assets [--examples 5]

tests/test_lm_eval_agreement.py runs the same comparison on hand-written answers.
"""

import argparse
import functools
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from autoif_dagster import evaluation, nltk_data


@functools.cache
def harness():
    """lm-eval's IFEval scoring module. Its import looks for NLTK's punkt_tab and downloads it
    when missing: ensure() puts ours first on NLTK's path, so both judge with the same Punkt."""
    nltk_data.ensure()
    import langdetect

    # the language checkers ask langdetect, which draws at random unless seeded (neither library
    # seeds it): an ambiguous text could flip between the two judges' calls, seeded it cannot
    langdetect.DetectorFactory.seed = 0
    from lm_eval.tasks.ifeval import utils

    return utils


def lm_eval_judge(row: dict, response: str) -> dict:
    """lm-eval's verdicts on one answer to one of our prompt rows, in evaluation.judge's shape."""
    doc = {"key": row["key"], "prompt": row["prompt"], "instruction_id_list": row["instruction_id_list"],
           "kwargs": json.loads(row["kwargs"])}
    out = harness().process_results(doc, [response])
    return {"instruction_strict": out["inst_level_strict_acc"], "instruction_loose": out["inst_level_loose_acc"],
            "prompt_strict": out["prompt_level_strict_acc"], "prompt_loose": out["prompt_level_loose_acc"]}


def lm_eval_scores(verdicts: list[dict]) -> dict[str, float]:
    """The four scores as lm-eval aggregates them (ifeval.yaml: `mean` over prompts,
    utils.agg_inst_level_acc over the instructions of every prompt)."""
    from lm_eval.api.metrics import mean

    agg = harness().agg_inst_level_acc
    return {"prompt_strict": mean([v["prompt_strict"] for v in verdicts]),
            "prompt_loose": mean([v["prompt_loose"] for v in verdicts]),
            "instruction_strict": agg([v["instruction_strict"] for v in verdicts]),
            "instruction_loose": agg([v["instruction_loose"] for v in verdicts])}


@dataclass
class Agreement:
    prompts: int = 0
    instructions: int = 0
    equal: Counter = field(default_factory=Counter)  # mode (strict, loose) -> verdicts alike
    prompts_equal: int = 0  # every verdict of the prompt, and both prompt-level ones, alike
    # instruction type -> (mode -> verdicts that differ); and how many of it were judged
    differ: dict[str, Counter] = field(default_factory=dict)
    judged: Counter = field(default_factory=Counter)
    # judge (ours, lm_eval) -> prompts on which its checkers drew an argument at random: IFEval's
    # replace one they cannot use (a "letter" that is not a-z; for lm-eval, also a falsy kwarg,
    # which it drops) with a random one, drawn anew for every judgement
    drawn: Counter = field(default_factory=Counter)
    # why the differing prompts differ: "random" (such a draw), "strip_thinking" (they agree once
    # lm-eval judges the answer as if-verifiable preprocesses it: surrounding whitespace and
    # <think> blocks removed), or "unexplained"
    causes: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)
    ours: dict[str, float] = field(default_factory=dict)
    theirs: dict[str, float] = field(default_factory=dict)


def _judged(judge, row: dict, response: str) -> tuple[dict, bool]:
    """A judge's verdicts, and whether its checkers drew from `random` meanwhile (langdetect,
    the only other source of chance, has its own generator). Every draw of theirs (choice,
    randint) goes through the module's generator's getrandbits; ours seeds that generator per
    answer and restores it, so its state alone would not show a draw."""
    draws = []
    generator = random._inst
    bits = generator.getrandbits
    generator.getrandbits = lambda k: draws.append(k) or bits(k)
    try:
        verdict = judge(row, response)
    finally:
        del generator.getrandbits
    return verdict, bool(draws)


def compare(pairs: list[tuple[dict, str]]) -> Agreement:
    """Both judges on every (prompt row, answer) pair."""
    from if_verifiable.common import strip_thinking

    result, ours_all, theirs_all = Agreement(prompts=len(pairs)), [], []
    for row, response in pairs:
        (ours, ours_drew), (theirs, theirs_drew) = _judged(evaluation.judge, row, response), _judged(
            lm_eval_judge, row, response)
        result.drawn.update(name for name, drew in (("ours", ours_drew), ("lm_eval", theirs_drew)) if drew)
        ours_all.append(ours)
        theirs_all.append(theirs)
        for i, kind in enumerate(row["instruction_id_list"]):
            result.judged[kind] += 1
            for mode in ("strict", "loose"):
                if ours[f"instruction_{mode}"][i] == theirs[f"instruction_{mode}"][i]:
                    result.equal[mode] += 1
                else:
                    result.differ.setdefault(kind, Counter())[mode] += 1
        result.instructions += len(row["instruction_id_list"])
        if ours == theirs:
            result.prompts_equal += 1
            continue
        cause = ("random" if ours_drew or theirs_drew else
                 "strip_thinking" if lm_eval_judge(row, strip_thinking(response)) == ours else "unexplained")
        result.causes[cause] += 1
        result.examples.append({"key": row["key"], "instructions": row["instruction_id_list"], "ours": ours,
                                "lm_eval": theirs, "cause": cause, "response": response})
    result.ours, result.theirs = evaluation.scores(ours_all), lm_eval_scores(theirs_all)
    return result


def load_answers(path: Path, rows: list[dict]) -> list[tuple[dict, str]]:
    """(prompt row, answer) for every IFEval answer in the file, matched by key or prompt text."""
    by_key, by_prompt = {r["key"]: r for r in rows}, {r["prompt"]: r for r in rows}
    if path.is_dir() or path.suffix == ".parquet":  # an assets directory, or the artifact itself
        from autoif_dagster.resources.io_manager import read_artifact

        frame = read_artifact(path.parent, path.stem) if path.suffix else read_artifact(path, "base_benchmark_scores")
        if frame is None:
            raise SystemExit(f"no base_benchmark_scores artifact at {path}")
        # as score_model judged them: a refused request is an empty answer
        return [(by_key[a["prompt_id"].split(":", 1)[1]], "" if a["finish_reason"] == "error" else a["response"])
                for a in frame.filter(frame["benchmark"] == "ifeval").to_dicts()]
    pairs = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                answer = json.loads(line)
                row = by_key[str(answer["key"])] if "key" in answer else by_prompt[answer["prompt"]]
                pairs.append((row, answer["response"]))
    return pairs


def report(result: Agreement, examples: int) -> str:
    lines = [f"prompts: {result.prompts}, instructions: {result.instructions}",
             f"strict verdicts equal: {result.equal['strict']}/{result.instructions}",
             f"loose verdicts equal:  {result.equal['loose']}/{result.instructions}",
             f"prompts judged alike:  {result.prompts_equal}/{result.prompts}"]
    if result.examples:
        lines.append(f"why the {len(result.examples)} others differ: "
                     + ", ".join(f"{cause} {n}" for cause, n in sorted(result.causes.items())))
    lines.append(f"prompts whose checkers drew an argument at random: ours {result.drawn['ours']}, "
                 f"lm-eval {result.drawn['lm_eval']}")
    if result.differ:
        lines.append("\ninstruction type differing: strict / loose (of judged)")
        for kind, modes in sorted(result.differ.items()):
            lines.append(f"  {kind:48} {modes['strict']:3} / {modes['loose']:3} (of {result.judged[kind]})")
    lines.append(f"\n{'score':20} {'ours':>8} {'lm-eval':>8}")
    lines += [f"{m:20} {result.ours[m]:8.4f} {result.theirs[m]:8.4f}" for m in evaluation.METRICS]
    for ex in result.examples[:examples]:
        lines.append(f"\nkey {ex['key']} {ex['instructions']} (cause: {ex['cause']})\n"
                     f"  ours    strict {ex['ours']['instruction_strict']} loose {ex['ours']['instruction_loose']}\n"
                     f"  lm-eval strict {ex['lm_eval']['instruction_strict']} loose {ex['lm_eval']['instruction_loose']}\n"
                     f"  answer starts {ex['response'][:60]!r}, ends {ex['response'][-60:]!r}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ifeval", required=True, help="IFEval prompts (JSONL as published)")
    parser.add_argument("--answers", required=True, help="an assets directory or its base_benchmark_scores.parquet, or JSONL: key (or prompt) and response")
    parser.add_argument("--examples", type=int, default=5, help="differing answers to print")
    args = parser.parse_args()
    pairs = load_answers(Path(args.answers), evaluation.load_prompts("ifeval", args.ifeval))
    if not pairs:
        parser.error(f"no IFEval answers in {args.answers}")
    random.seed(0)  # the checkers' random draws: the same figures every run
    print(report(compare(pairs), args.examples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
