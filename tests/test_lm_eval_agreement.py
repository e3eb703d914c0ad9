"""Our IFEval verdicts and scores beside lm-evaluation-harness's IFEval task (lm_eval's own
process_results, registry and aggregations) on the same answers: every instruction type
followed and broken, the loose variants' edge cases, and the cases where the two differ,
pinned with their cause. benchmarks/bench_lm_eval_agreement.py does the comparison; here it
runs on hand-written answers, there on a model's."""

import json
import random
import sys

import nltk
import pytest
from if_verifiable.common import strip_thinking

from autoif_dagster import evaluation, nltk_data
from benchmarks.bench_lm_eval_agreement import compare, harness, lm_eval_judge, load_answers
from tests.ifeval_cases import IFEVAL_CASES


def row(*instructions: tuple[str, dict], prompt: str = "Write about cats.", key: str = "1") -> dict:
    return {"benchmark": "ifeval", "key": key, "prompt": prompt, "instruction_id_list": [i for i, _ in instructions],
            "kwargs": json.dumps([kw for _, kw in instructions])}


@pytest.fixture(scope="module", autouse=True)
def lm_eval():
    """lm-eval's IFEval module, imported with NLTK's downloader disabled: its import-time Punkt
    check must be answered by our offline data, never by the network."""
    assert "lm_eval.tasks.ifeval.utils" not in sys.modules  # else the import below proves nothing

    def refuse(*args, **kwargs):
        raise AssertionError(f"lm-eval tried nltk.download{args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nltk, "download", refuse)
        return harness()


def test_lm_eval_reads_our_punkt_and_knows_the_same_instructions():
    assert str(nltk.data.find("tokenizers/punkt_tab")).startswith(str(nltk_data.data_dir()))
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    assert set(INSTRUCTION_DICT) == set(IFEVAL_CASES) == set(evaluation._registry("ifeval"))


@pytest.mark.parametrize("instruction", sorted(IFEVAL_CASES))
def test_every_instruction_type_followed_and_broken_judged_alike(instruction):
    kwargs, follows, breaks = IFEVAL_CASES[instruction]
    for answer in (follows, breaks):
        r = row((instruction, kwargs))
        assert lm_eval_judge(r, answer) == evaluation.judge(r, answer), answer


LOWER, NO_COMMA = ("change_case:english_lowercase", {}), ("punctuation:no_comma", {})
# The loose rule's variants (first, last or both lines removed, asterisks removed, and the
# combinations), an empty variant never counting, and prompts of several instructions:
# (instructions, answer, the strict verdicts, the loose verdicts) that both judges must give.
LOOSE_CASES = [
    ([LOWER], "Sure! Here it is:\nall lowercase here.", [False], [True]),
    ([LOWER], "all lowercase here.\nHope This Helps!", [False], [True]),
    ([LOWER], "Sure!\nall lowercase here.\nHope This Helps!", [False], [True]),
    ([LOWER], "Sure!\r\nall lowercase here.", [False], [True]),  # \r stays on the removed line
    ([LOWER], "Sure!\nThis Has Capitals.\nbye", [False], [False]),  # no variant drops the middle
    ([("startend:end_checker", {"end_phrase": "Any other questions?"})],
     "Cats sleep. **Any other questions?**", [False], [True]),
    ([("startend:quotation", {})], 'Here you go:\n**"Cats sleep a lot."**', [False], [True]),
    ([("detectable_format:json_format", {})], 'Here is the JSON:\n{"cats": 2}\nDone.', [False], [True]),
    ([("detectable_format:title", {})], "**<<On Cats>>**\nCats are calm.", [True], [True]),
    ([NO_COMMA], "Cats, dogs and birds.", [False], [False]),  # removing its only line leaves nothing
    ([("detectable_format:number_highlighted_sections", {"num_highlights": 2})],
     "Cats are *calm* and *curious*.", [True], [True]),  # the unstarred variant fails, the answer not
    ([LOWER, NO_COMMA], "Sure, here:\nall lowercase without commas", [False, False], [True, True]),
    ([LOWER, NO_COMMA, ("keywords:existence", {"keywords": ["dog"]})],
     "Well, here:\nthe dog and the cat sleep, all day long in the house.\nEnd", [False, False, True], [True, False, True]),
    ([("combination:repeat_prompt", {"prompt_to_repeat": "Write about cats."})],
     "Okay:\nWrite about cats. Cats sleep.", [False], [True]),  # the checker reads the prompt too
    ([LOWER, NO_COMMA], "", [False, False], [False, False]),
    ([LOWER, NO_COMMA], " \n ", [False, False], [False, False]),
]


@pytest.mark.parametrize(("instructions", "answer", "strict", "loose"), LOOSE_CASES)
def test_loose_variants_judged_alike(instructions, answer, strict, loose):
    r = row(*instructions)
    expected = {"instruction_strict": strict, "instruction_loose": loose,
                "prompt_strict": all(strict), "prompt_loose": all(loose)}
    assert evaluation.judge(r, answer) == expected
    assert lm_eval_judge(r, answer) == expected


# Where the two differ: (instructions, answer, ours strict/loose, lm-eval's strict/loose).
# if-verifiable's evaluate_instructions first runs strip_thinking on the answer: it strips
# surrounding whitespace and drops a <think> block (or everything after an unclosed <think>);
# lm-eval, like Google's evaluation_lib, judges the answer as given. So an answer ending in a
# newline has an empty last line for lm-eval's loose variants to remove, not its real last
# line; a leading blank paragraph shifts which paragraph is the nth; thinking is judged.
STRIPPED = [
    ([LOWER], "Sure!\nall lowercase here.\nHope This Helps!\n", ([False], [True]), ([False], [False])),
    ([LOWER], "\nSure!\nall lowercase here.\nHope This Helps!", ([False], [True]), ([False], [False])),
    ([("length_constraints:nth_paragraph_first_word", {"first_word": "weekend", "num_paragraphs": 2,
                                                        "nth_paragraph": 2})],
     "\n\nWe made plans.\n\nWeekend trips are fun.", ([True], [True]), ([False], [True])),
    ([LOWER], "<think>Let Me Think.</think>all lowercase here.", ([True], [True]), ([False], [False])),
    ([NO_COMMA], "<think>unclosed thoughts without commas", ([False], [False]), ([True], [True])),
]


@pytest.mark.parametrize(("instructions", "answer", "ours", "theirs"), STRIPPED)
def test_answers_if_verifiable_strips_first_are_judged_differently(instructions, answer, ours, theirs):
    r = row(*instructions)
    got = evaluation.judge(r, answer)
    assert (got["instruction_strict"], got["instruction_loose"]) == ours
    lm = lm_eval_judge(r, answer)
    assert (lm["instruction_strict"], lm["instruction_loose"]) == theirs
    assert lm_eval_judge(r, strip_thinking(answer)) == got  # the stripping is the whole difference


def test_falsy_kwargs_are_dropped_by_lm_eval_only():
    """lm-eval keeps an instruction's kwargs only where they are truthy (`if v`), if-verifiable
    where they are not None: a 0 threshold is 0 for ours, a random one for lm-eval's checker.
    IFEval's published prompts have no falsy kwarg (their 834 kwargs checked), so this matters
    only for prompt files of one's own."""
    r = row(("detectable_format:number_highlighted_sections", {"num_highlights": 0}))
    assert evaluation.judge(r, "No highlights at all.")["prompt_strict"] is True
    assert lm_eval_judge(r, "No highlights at all.")["prompt_strict"] is False  # it drew 1 to 4


LETTER = ("keywords:letter_frequency", {"letter": "#", "let_frequency": 4, "let_relation": "at least"})
HALF = "".join(c * 4 for c in "abcdefghijklm")  # 26 of the 52 letters a draw picks from appear 4 times


def test_a_letter_that_is_no_letter_is_drawn_at_random_by_lm_eval_and_by_the_answer_by_us():
    """IFEval's prompts 1122 and 1129 ask for a letter '#' and '!': both libraries' checker then
    draws a random letter. lm-eval draws anew for every judgement (and builds the checker twice
    per answer, strict then loose, so its strict can pass where its loose fails); ours draws
    from a generator seeded by the answer, so an answer's verdict never changes, and the
    caller's generator is left as it was."""
    r = row(LETTER)
    seen = {evaluation.judge: set(), lm_eval_judge: set()}
    for seed in range(40):
        for judge, verdicts in seen.items():
            random.seed(seed)
            verdict = judge(r, HALF)
            verdicts.add((*verdict["instruction_strict"], *verdict["instruction_loose"]))
    ours, theirs = seen.values()
    assert len(ours) == 1 and ours <= {(True, True), (False, False)}  # one draw per instruction, always the same
    assert theirs == {(True, True), (False, False), (True, False), (False, True)}
    drawn_for_another_answer = {tuple(evaluation.judge(r, HALF + " " * n)["instruction_strict"]) for n in range(40)}
    assert drawn_for_another_answer == {(True,), (False,)}  # the seed is the answer's: the draw still varies
    random.seed(7)
    expected = random.random()
    random.seed(7)
    evaluation.judge(r, HALF)
    assert random.random() == expected


def test_language_verdicts_do_not_change_from_one_judgement_to_the_next():
    """langdetect draws at random: unseeded, "Hola mundo" came out es or pt, "Es bien" es or
    de, from one call to the next."""
    r = row(("language:response_language", {"language": "es"}))
    for answer in ("Hola mundo", "Es bien"):
        assert len({evaluation.judge(r, answer)["prompt_strict"] for _ in range(30)}) == 1


def test_compare_puts_differences_of_a_random_draw_down_to_it():
    differed = 0
    for seed in range(20):
        random.seed(seed)
        result = compare([(row(LETTER), HALF)])
        assert result.drawn == {"ours": 1, "lm_eval": 1}
        differed += len(result.examples)
        assert set(result.causes) <= {"random"}
    assert differed > 0


def _pairs() -> list[tuple[dict, str]]:
    pairs = [(row((i, kw), key=f"{i}/{n}"), answer) for i, (kw, *answers) in sorted(IFEVAL_CASES.items())
             for n, answer in enumerate(answers)]
    return pairs + [(row(*case[0], key=f"loose/{n}"), case[1]) for n, case in enumerate(LOOSE_CASES)]


def test_four_scores_identical_over_every_agreeing_case():
    result = compare(_pairs())
    assert result.prompts == 50 + len(LOOSE_CASES)
    assert result.instructions == 50 + sum(len(case[0]) for case in LOOSE_CASES)
    assert result.equal == {"strict": result.instructions, "loose": result.instructions}
    assert result.prompts_equal == result.prompts and not result.differ and not result.examples
    assert not result.drawn  # every kwarg usable: no checker drew
    assert result.ours == result.theirs  # exactly: the same counts over the same totals
    assert result.ours["prompt_strict"] < result.ours["prompt_loose"]  # the loose cases did count


def test_compare_counts_and_explains_the_differences():
    stripped = [(row(*c[0], key=f"stripped/{n}"), c[1]) for n, c in enumerate(STRIPPED)]
    falsy = (row(("detectable_format:number_highlighted_sections", {"num_highlights": 0}), key="falsy"), "Plain.")
    result = compare(_pairs() + stripped + [falsy])
    assert result.prompts_equal == result.prompts - len(STRIPPED) - 1
    # lm-eval drew the dropped threshold; nothing of ours drew
    assert result.causes == {"strip_thinking": len(STRIPPED), "random": 1}
    assert result.drawn == {"lm_eval": 1}
    assert [(e["key"], e["cause"]) for e in result.examples] == [
        *((r["key"], "strip_thinking") for r, _ in stripped), ("falsy", "random")]
    assert result.differ == {"change_case:english_lowercase": {"strict": 1, "loose": 3},
                             "length_constraints:nth_paragraph_first_word": {"strict": 1},
                             "punctuation:no_comma": {"strict": 1, "loose": 1},
                             "detectable_format:number_highlighted_sections": {"strict": 1, "loose": 1}}
    assert result.ours != result.theirs


def test_answers_load_from_jsonl_by_key_or_prompt_and_from_the_scores_artifact(tmp_path):
    import polars as pl

    rows = [row(LOWER, key="7", prompt="Answer in lowercase."), row(NO_COMMA, key="8", prompt="No commas.")]
    jsonl = tmp_path / "answers.jsonl"
    jsonl.write_text(json.dumps({"key": 7, "response": "ok"}) + "\n\n"
                     + json.dumps({"prompt": "No commas.", "response": "fine"}) + "\n")
    assert load_answers(jsonl, rows) == [(rows[0], "ok"), (rows[1], "fine")]
    assets = tmp_path / "assets"
    assets.mkdir()
    pl.DataFrame({"prompt_id": ["ifeval:8", "ifbench:x", "ifeval:7"], "benchmark": ["ifeval", "ifbench", "ifeval"],
                  "response": ["a, b", "c", "partial"], "finish_reason": ["stop", "stop", "error"]}
                 ).write_parquet(assets / "base_benchmark_scores.parquet")
    expected = [(rows[1], "a, b"), (rows[0], "")]  # a refused request is scored as an empty answer
    assert load_answers(assets, rows) == expected
    assert load_answers(assets / "base_benchmark_scores.parquet", rows) == expected
