"""Stage assets called directly on hand-built inputs of the kind real runs produce; no LLM
is needed by these stages, so their outputs are exact."""

import json

import dagster as dg
import polars as pl

from autoif_dagster.assets.datasets import dpo_pairs, sft_dataset
from autoif_dagster.assets.queries import instruction_prompts, queries
from autoif_dagster.assets.responses import response_verdicts, sampling_plan
from autoif_dagster.assets.verifiers import cross_validation
from autoif_dagster.config import AutoIFConfig, CrossValConfig, QueryConfig, ResponseConfig
from autoif_dagster.resources.sandbox import SandboxResource
from autoif_dagster.schemas import conform, content_id
from autoif_dagster.sources import load_queries
from tests.rounds import context, frame

NO_E = "def evaluate(response):\n    return 'e' not in response.lower()"
NO_E_LOOP = (
    "def evaluate(response):\n    for word in response.split():\n        if 'e' in word.lower():\n"
    "            return False\n    return True"
)
WRONG = "def evaluate(response):\n    return len(response) > 5"
BROKEN = "def evaluate(response)\n    return True"
CAPS = "def evaluate(response):\n    return response.isupper()"

CASES_E = [{"input": "A big cat sat", "output": True}, {"input": "The sky", "output": False},
           {"input": "Hi, amigo!", "output": True}, {"input": "Every day", "output": False}]


def _candidates() -> pl.DataFrame:
    rows = []
    for i, (iid, func, cases) in enumerate([
        ("inst-e", NO_E, CASES_E[:2]), ("inst-e", NO_E_LOOP, CASES_E[2:]), ("inst-e", WRONG, CASES_E[:2]),
        ("inst-e", BROKEN, []), ("inst-e", NO_E, CASES_E[:1]),  # a repeated function pools as one
        ("inst-caps", BROKEN, [{"input": "HELLO", "output": True}]),
    ]):
        rows.append({"candidate_id": f"c{i}", "instruction_id": iid, "sample_index": i, "raw": "{}", "func": func, "cases": cases})
    return frame("verifier_candidates", rows)


def test_cross_validation_keeps_working_verifiers_and_agreed_cases(sandbox):
    autoif = AutoIFConfig(crossval=CrossValConfig(min_functions=2, min_cases=3, case_agreement_above=0.5,
                                                  function_min_accuracy=0.8))
    outputs = {o.output_name: o for o in cross_validation(context(), autoif, sandbox, _candidates())}
    verifiers, cases = outputs["verifiers"].value, outputs["test_cases"].value
    assert sorted(verifiers["func"].to_list()) == sorted([NO_E, NO_E_LOOP])
    assert set(verifiers["accuracy"].to_list()) == {1.0}
    by_func = dict(zip(verifiers["func"].to_list(), verifiers["candidate_ids"].to_list()))
    assert sorted(by_func[NO_E]) == ["c0", "c4"]
    # every case has 2 of 3 working functions agreeing (WRONG errs on 2), so all 4 survive
    assert cases.height == 4 and (cases["agreement"] > 0.5).all()
    meta = outputs["verifiers"].metadata
    assert meta["rows_in"].value == 5  # distinct functions: 4 for inst-e, 1 for inst-caps
    assert meta["dropped"].value == {"fails_no_negative_case": 1, "compile_error": 2}  # WRONG passes all
    assert meta["instructions_dropped"].value == {"too_few_functions": 1}
    conform("verifiers", verifiers)


def _prompts_and_responses():
    prompts = frame("instruction_prompts", [
        {"prompt_id": "p1", "instruction_id": "inst-e", "query_id": "q1", "instruction": "Use no letter e",
         "query": "Name an animal", "prompt": "Name an animal\n\nFollow this instruction strictly in your answer: Use no letter e"},
    ])
    texts = ["A cat.", "Big dog, long tusk", "The elephant", "Seven eels"]
    responses = frame("responses", [
        {"response_id": f"r{i}", "prompt_id": "p1", "sample_index": i, "with_instruction": i < 3, "model": "m",
         "response": t, "finish_reason": "stop"}
        for i, t in enumerate(texts)
    ])
    verifiers = frame("verifiers", [
        {"verifier_id": "v1", "instruction_id": "inst-e", "candidate_ids": ["c0"], "func": NO_E, "accuracy": 1.0},
        {"verifier_id": "v2", "instruction_id": "inst-e", "candidate_ids": ["c1"], "func": NO_E_LOOP, "accuracy": 1.0},
        {"verifier_id": "v3", "instruction_id": "inst-e", "candidate_ids": ["c2"], "func": "def evaluate(response):\n    return response.count('a') >= 1", "accuracy": 0.8},
    ])
    return prompts, responses, verifiers


def test_response_verdicts_pass_rates(sandbox):
    prompts, responses, verifiers = _prompts_and_responses()
    out = response_verdicts(context(), AutoIFConfig(), sandbox, responses, prompts, verifiers)
    rates = dict(zip(out.value["response_id"].to_list(), out.value["pass_rate"].to_list()))
    assert rates == {"r0": 1.0, "r1": 2 / 3, "r2": 1 / 3, "r3": 0.0}
    # which verifier said what is kept per response: "The elephant" passes only v3 (it has an "a")
    assert out.value["verdicts"][2].to_list() == [
        {"verifier_id": "v1", "kind": "fail"}, {"verifier_id": "v2", "kind": "fail"}, {"verifier_id": "v3", "kind": "pass"}]
    assert out.value["n_verifiers"].to_list() == [3, 3, 3, 3]
    assert out.metadata["passing"].value == 2  # above the default 0.5
    assert "pass_rate_histogram" in out.metadata
    assert out.metadata["sandbox_calls"].value["verdicts"] == 12  # 3 verifiers x 4 responses


def test_sft_and_dpo_from_verdicts_and_scores():
    prompts, responses, _ = _prompts_and_responses()
    verdicts = frame("response_verdicts", [
        {"response_id": r, "prompt_id": "p1", "n_verifiers": 3, "n_passed": round(p * 3), "n_errors": 0, "pass_rate": p}
        for r, p in [("r0", 1.0), ("r1", 2 / 3), ("r2", 1 / 3), ("r3", 0.0)]
    ])
    scores = frame("quality_scores", [
        {"response_id": "r0", "prompt_id": "p1", "score": 9, "raw": "{}"},
        {"response_id": "r1", "prompt_id": "p1", "score": 5, "raw": "{}"},
    ])
    autoif = AutoIFConfig()
    sft = sft_dataset(dg.build_asset_context(), autoif, prompts, responses, verdicts, scores)
    assert sft.value["response_id"].to_list() == ["r0"]
    assert sft.value["messages"][0].to_list() == [
        {"role": "user", "content": prompts["prompt"][0]}, {"role": "assistant", "content": "A cat."}]
    assert sft.metadata["dropped"].value == {"below_pass_rate": 2, "below_quality_score": 1}
    dpo = dpo_pairs(dg.build_asset_context(), autoif, prompts, responses, verdicts, scores)
    # r1 passes the verifiers but failed the quality bar: not a chosen response
    assert list(zip(dpo.value["chosen_response_id"], dpo.value["rejected_response_id"])) == [("r0", "r3")]
    assert dpo.value["pair_id"][0] == content_id("pair", "r0", "r3")
    # r3 was sampled for the query alone: the pair says so
    assert dpo.value["rejected_with_instruction"].to_list() == [False]
    assert dpo.metadata["pairs_rejected_query_only"].value == 1


def test_sampling_plan_sends_the_query_alone_after_the_prompt_samples():
    prompts, _, _ = _prompts_and_responses()
    row = prompts.to_dicts()[0]
    plan = sampling_plan([row], ResponseConfig(samples_per_prompt=2, query_only_samples=1))
    assert [(k, text) for _, k, text in plan] == [(0, row["prompt"]), (1, row["prompt"]), (2, "Name an animal")]
    assert len(sampling_plan([row, row], ResponseConfig(samples_per_prompt=3, query_only_samples=0))) == 6


def test_queries_keep_20_to_300_characters_after_strip_and_the_first_of_each_duplicate(tmp_path):
    """The paper's bounds, inclusive, on the stripped text (each text is padded with spaces
    in the file); duplicates up to case, spacing and final punctuation keep the first seen."""
    def of_length(n: int, tag: str) -> str:
        return (tag + " " + "w" * n)[:n]

    texts = {"q19": of_length(19, "short"), "q20": of_length(20, "least"), "q300": of_length(300, "most"),
             "q301": of_length(301, "long"), "first": "Tell me how to brew good coffee.",
             "recased": "tell ME how to  brew good COFFEE!", "unpunctuated": "Tell me how to brew good coffee",
             "other": "Tell me how to brew good tea."}
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "query": f"  {q} "}) for i, q in texts.items()))
    out = queries(dg.build_asset_context(), AutoIFConfig(queries_path=str(path)))
    assert dict(zip(out.value["source"], out.value["query"])) == {i: texts[i] for i in ["q20", "q300", "first", "other"]}
    assert out.metadata["rows_in"].value == 8
    assert out.metadata["dropped"].value == {"too_short": 1, "too_long": 1, "duplicate": 2}
    sampled = queries(dg.build_asset_context(), AutoIFConfig(queries_path=str(path), queries=QueryConfig(pool_size=3)))
    assert sampled.value.height == 3 and set(sampled.value["query_id"]) < set(out.value["query_id"])
    assert sampled.metadata["dropped"].value == {"too_short": 1, "too_long": 1, "duplicate": 2, "not_sampled": 1}


def test_the_default_pool_keeps_only_the_turns_that_open_a_conversation():
    """ShareGPT splits long conversations into segments; a later segment's first turn goes on
    from turns the pool lacks, and answers to it restate it or ask back."""
    loaded = dict(load_queries())
    assert loaded["sharegpt:5qLXIDz_19"].startswith("Combine all 11 bullet points")
    out = queries(dg.build_asset_context(), AutoIFConfig())
    assert out.value.height == 2000 and all(s.endswith("_0") for s in out.value["source"])
    assert out.metadata["dropped"].value["continues_a_conversation"] == sum(not s.endswith("_0") for s in loaded) > 5000
    every_turn = queries(dg.build_asset_context(), AutoIFConfig(queries=QueryConfig(openings_only=False)))
    assert "continues_a_conversation" not in every_turn.metadata["dropped"].value
    assert not all(s.endswith("_0") for s in every_turn.value["source"])


def test_instruction_prompts_pair_each_instruction_with_k_queries():
    consistent = frame("consistent_instructions", [
        {"instruction_id": f"i{n}", "instruction": f"Instruction {n}", "n_verifiers": 1} for n in range(3)])
    queries = frame("queries", [{"query_id": f"q{n}", "query": f"Query number {n}?", "source": "t"} for n in range(10)])
    out = instruction_prompts(context(), AutoIFConfig(queries=QueryConfig(per_instruction=4, prompts_per_round=None)), consistent, queries).value
    assert out.height == 12
    assert out.group_by("instruction_id").len()["len"].to_list() == [4, 4, 4]
    row = out.row(0, named=True)
    assert row["query"] in row["prompt"] and row["instruction"] in row["prompt"]
    assert row["prompt_id"] == content_id("prompt", row["instruction_id"], row["query_id"])


def test_the_rounds_prompt_budget_is_spread_over_the_instructions_it_has():
    queries = frame("queries", [{"query_id": f"q{n}", "query": f"Query number {n}?", "source": "t"} for n in range(10)])

    def prompts(instructions: int, **config) -> pl.DataFrame:
        consistent = frame("consistent_instructions", [
            {"instruction_id": f"i{n}", "instruction": f"Instruction {n}", "n_verifiers": 1} for n in range(instructions)])
        return instruction_prompts(context(), AutoIFConfig(queries=QueryConfig(**config)), consistent, queries).value

    budget = dict(per_instruction=6, prompts_per_round=12)
    assert prompts(2, **budget).group_by("instruction_id").len()["len"].to_list() == [6, 6]  # capped
    assert prompts(4, **budget).group_by("instruction_id").len()["len"].to_list() == [3, 3, 3, 3]
    # 12 over 5: 2 each, the first two one more; the whole budget is asked
    assert prompts(5, **budget).group_by("instruction_id", maintain_order=True).len()["len"].to_list() == [3, 3, 2, 2, 2]
    assert prompts(20, **budget).height == 20  # at least one each
    assert prompts(4, per_instruction=6, prompts_per_round=None).height == 24  # the paper: K each
    # fewer queries for an instruction are the first of its own order: the ledger answers them again
    few, many = prompts(4, **budget), prompts(2, **budget)
    assert set(few.filter(pl.col("instruction_id") == "i0")["query_id"]) < set(many.filter(pl.col("instruction_id") == "i0")["query_id"])


def test_rerun_of_cross_validation_executes_nothing_with_a_ledger(sandbox, tmp_path):
    cached = SandboxResource(backend=sandbox.backend, timeout_s=2.0, ledger_path=str(tmp_path / "ledger.sqlite"))
    autoif = AutoIFConfig(crossval=CrossValConfig(min_functions=2, min_cases=3))
    first = {o.output_name: o for o in cross_validation(context(), autoif, cached, _candidates())}
    second = {o.output_name: o for o in cross_validation(context(), autoif, cached, _candidates())}
    assert first["verifiers"].metadata["sandbox_calls"].value["executed"] > 0
    assert second["verifiers"].metadata["sandbox_calls"].value["executed"] == 0
    assert second["verifiers"].value.equals(first["verifiers"].value)
