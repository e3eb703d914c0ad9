"""Can the supervisor tell an answer that only restates its query from one that answers it?

The restatement filter (`selection.restates_the_query`) is lexical: at most 20% of an answer's
words new to its query and instruction. Answers just over that line still restate ("YES, THERE
ARE MANY POTENTIAL TOPICS THAT FIT THIS PAPER CALLS", 22% new), and labelled answers sit on both
sides of it ("Yes, you can manually render Thymeleaf templates from a String", 25% new). This
measures yes/no questions that would check it by meaning, read as the probability of "yes", on
the labelled answers (`tests/fixtures/quality_labels.jsonl`):

- `zero_shot`: "Does the response only repeat or reword the query, without answering it?"
- `few_shot`: the same after six made-up examples, query and response lower-cased (letter case
  is the format instruction's business, and capitals alone pulled the judge towards "yes")
- `reference`: the policy's own answer to the bare query shown as a reference: "Does the
  response answer the query, as the reference does, rather than only repeating the query?"

Prints each question's AUC (how well P(answers) ranks the labelled answers above the
non-answers), over all rows and over those the lexical filter lets through, and at each bar how
many of those answers and non-answers it would drop. None is in the product: see
docs/decisions/verifier-precision.md.

    .venv/bin/python benchmarks/bench_restatement_judge.py [--model qwen2.5-coder-1.5b-instruct]
"""

import argparse
import json
from pathlib import Path

from autoif_dagster.config import Sampling
from autoif_dagster.method import prompts
from autoif_dagster.method.audit import ranking_auc
from autoif_dagster.method.parsing import probability_of_yes
from autoif_dagster.method.selection import not_an_answer
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.models import DEFAULT_SUPERVISOR
from autoif_dagster.resources.vllm_engine import shutdown_engines

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = ("You check whether a response answers a user's query. The user also gave a format instruction; "
          "text the instruction asks for is not an answer.")
# Made up for this benchmark (none from the labelled file): (query, instruction, response, restates?)
SHOTS = [
    ("how do i reverse a list in python?", "Use reversed order", "how do i reverse a list in python?", "yes"),
    ("how do i reverse a list in python?", "Use lowercase",
     "call my_list.reverse() to reverse it in place, or use my_list[::-1] for a reversed copy.", "no"),
    ("write a poem about the sea", "Use a title", "a poem about the sea.", "yes"),
    ("is rust faster than go?", "Answer in one sentence",
     "yes, rust is usually faster than go because it has no garbage collector.", "no"),
    ("give me three names for a bakery", "Use capital letters", "three names for a bakery", "yes"),
    ("give me three names for a bakery", "Use capital letters", "1. rise & shine 2. the daily crumb 3. flour power", "no"),
]
FEW_SHOT_TASK = ("You spot responses that only repeat or reword the user's query (or turn it into a title) "
                 "instead of answering it. Answer yes if the response only restates the query, no if it gives an answer.")
REFERENCE_TASK = "You compare a response with a reference answer to the same query. Letter case and format do not matter."


def _turn(query: str, instruction: str, response: str) -> str:
    return f"[Query] {query}\n[Instruction] {instruction}\n[Response] {response}\nDoes the response only restate the query?"


def zero_shot(row: dict, reference: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"[Query] {row['query']}\n[Instruction] {row['instruction']}\n[Response] "
             f"{row['response']}\nDoes the response only repeat or reword the query, without answering it? Answer yes or no."}]


def few_shot(row: dict, reference: str) -> list[dict]:
    messages = [{"role": "system", "content": FEW_SHOT_TASK}]
    for query, instruction, response, restates in SHOTS:
        messages += [{"role": "user", "content": _turn(query, instruction, response)},
                     {"role": "assistant", "content": restates}]
    return messages + [{"role": "user", "content": _turn(row["query"].lower(), row["instruction"], row["response"].lower())}]


def with_reference(row: dict, reference: str) -> list[dict]:
    response = row["response"].lower() if row["response"].isupper() else row["response"]
    return [{"role": "system", "content": REFERENCE_TASK},
            {"role": "user", "content": f"[Query] {row['query']}\n[Reference answer] {reference}\n[Response] {response}\n"
             "Does the response answer the query, as the reference does, rather than only repeating the query? "
             "Answer yes or no."}]


# question -> (prompt, whether "yes" means the response answers)
QUESTIONS = {"zero_shot": (zero_shot, False), "few_shot": (few_shot, False), "reference": (with_reference, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=Path, default=ROOT / "tests" / "fixtures" / "quality_labels.jsonl")
    parser.add_argument("--model", default=DEFAULT_SUPERVISOR)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.labelled.read_text().splitlines()]
    llm = LLMResource(model=args.model)
    queries = sorted({r["query"] for r in rows})
    answered = llm.chat([Sampling(temperature=0.0, max_tokens=200).request(prompts.response_prompt(q), seed=0)
                         for q in queries]).completions
    reference = {q: c.text for q, c in zip(queries, answered)}
    yes_no = Sampling(temperature=0.0, max_tokens=1)
    requests = [yes_no.request(prompt(r, reference[r["query"]]), seed=0, top_logprobs=20)
                for prompt, _ in QUESTIONS.values() for r in rows]
    completions = llm.chat(requests).completions
    shutdown_engines()
    labels = [r["answers"] for r in rows]
    through = [k for k, r in enumerate(rows) if not not_an_answer(r["response"], r["query"], r["instruction"])]
    n_answers = sum(labels[k] for k in through)
    print(f"\n=== restatement questions, {args.model}, {len(rows)} labelled answers ({sum(labels)} answer); "
          f"{len(through)} pass the lexical filter ({n_answers} answer) ===")
    for j, (name, (_, yes_answers)) in enumerate(QUESTIONS.items()):
        yes = [probability_of_yes(c.top_logprobs) for c in completions[j * len(rows):(j + 1) * len(rows)]]
        answers = [0.5 if p is None else (p if yes_answers else 1 - p) for p in yes]  # P(the response answers)
        print(f"\n{name}: AUC {ranking_auc(answers, labels):.3f} over all, "
              f"{ranking_auc([answers[k] for k in through], [labels[k] for k in through]):.3f} past the lexical filter")
        print("| drop when P(answers) below | answers dropped | non-answers dropped |\n|---|---|---|")
        for bar in (0.3, 0.4, 0.5, 0.6):
            good = sum(answers[k] < bar for k in through if labels[k])
            bad = sum(answers[k] < bar for k in through if not labels[k])
            print(f"| {bar} | {good}/{n_answers} | {bad}/{len(through) - n_answers} |")


if __name__ == "__main__":
    main()
