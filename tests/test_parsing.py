"""Parsers on output shaped like real supervisor generations: fenced JSON, prose around it,
escaped newlines, booleans as strings, cases as pairs, truncation."""

import json
import math

import pytest

from autoif_dagster.method import prompts

from autoif_dagster.method.parsing import (
    ParseError,
    expected_score,
    extract_json,
    parse_back_translation,
    parse_instruction_line,
    parse_score,
    parse_verifier,
    parse_yes_no,
    probability_of_yes,
    split_lines,
)

FENCED = (
    '```json\n{\n  "func": "def evaluate(response):\\n    words = response.split()\\n'
    '    return all(w[0].lower() == \'b\' for w in words if w[0].isalpha())",\n'
    '  "cases": [\n    {"input": "Bananas bring big benefits", "output": "true"},\n'
    '    {"input": "Apples are great", "output": "false"},\n'
    '    {"input": "Bold brave bears", "output": true}\n  ]\n}\n```'
)


def test_fenced_json_with_string_booleans():
    v = parse_verifier(FENCED)
    assert v.func.startswith("def evaluate(response):\n    words")
    assert v.cases == (
        ("Bananas bring big benefits", True),
        ("Apples are great", False),
        ("Bold brave bears", True),
    )
    assert v.bad_cases == 0


def test_prose_around_json_and_raw_newlines_inside_strings():
    raw = (
        "Sure! Here is the function you asked for:\n"
        '{"func": "def evaluate(response):\n    return response.isupper()", '
        '"cases": [["HELLO WORLD", true], ["Hello", "False"]]}\n'
        "Let me know if you need anything else."
    )
    v = parse_verifier(raw)
    assert v.func == "def evaluate(response):\n    return response.isupper()"
    assert v.cases == (("HELLO WORLD", True), ("Hello", False))


def test_double_escaped_code_is_unescaped():
    # the model followed "use \\n instead of newlines" once too often
    raw = json.dumps({"func": "def evaluate(response):\\n    return ',' not in response", "cases": []})
    v = parse_verifier(raw)
    assert v.func.splitlines() == ["def evaluate(response):", "    return ',' not in response"]
    assert v.cases == ()


def test_bad_cases_are_counted_not_fatal():
    raw = json.dumps(
        {
            "func": "def evaluate(response):\n    return True",
            "cases": [
                {"input": "ok", "output": True},
                {"input": 42, "output": True},  # input must be a string
                {"input": "x", "output": "maybe"},  # not a boolean
                {"output": False},  # missing input
                "not a case",
            ],
        }
    )
    v = parse_verifier(raw)
    assert v.cases == (("ok", True),)
    assert v.bad_cases == 4


def test_our_schemas_follow_and_break_lists_become_labelled_cases():
    raw = json.dumps({
        prompts.FOLLOWS_KEY: ["all lowercase here.", "fine"],
        prompts.VIOLATES_KEY: ["Capital Letters", 7],  # a non-string is a bad case, not a crash
        "func": "def evaluate(response):\n    return response == response.lower()",
    })
    v = parse_verifier(raw)
    assert v.cases == (("all lowercase here.", True), ("fine", True), ("Capital Letters", False))
    assert v.bad_cases == 1


def test_the_verifier_schema_always_asks_for_both_labels():
    schema = prompts.verifier_schema(3)
    follows, violates = (schema["properties"][k] for k in (prompts.FOLLOWS_KEY, prompts.VIOLATES_KEY))
    assert follows["minItems"] == 2 and violates["minItems"] == 1
    assert list(schema["properties"])[-1] == "func"  # examples are written before the code


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("I cannot write that function.", "not_json"),
        ('{"func": "def evaluate(r):\\n    return', "not_json"),  # truncated at max_tokens
        ('["def evaluate(r): return True"]', "wrong_type"),
        ('{"cases": [{"input": "a", "output": true}]}', "missing_key"),
        ('{"func": 12, "cases": []}', "wrong_type"),
        ('{"func": "   ", "cases": []}', "empty"),
        ('{"func": "evaluate(response) -> bool", "cases": []}', "no_function"),  # a signature, not code
        ('{"func": "def check(r):\\n    return True", "cases": []}', "no_function"),
    ],
)
def test_malformed_verifier_output_names_the_reason(raw, reason):
    with pytest.raises(ParseError) as exc:
        parse_verifier(raw)
    assert exc.value.reason == reason


def test_extract_json_prefers_whole_text_then_fence():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('text ```\n{"a": 2}\n``` more') == {"a": 2}


def test_instruction_lines_are_normalised_and_filtered():
    raw = (
        "Here are some new instructions:\n"
        "1. Answer using only words of five letters or fewer.\n"
        "- \"Respond with exactly two paragraphs\"\n"
        "* Use no more than three commas\n"
        "Why?\n"
        "ok\n"
        "The function should take a single argument: the user's answer\n"
        "Use only the words listed in your instruction\n"
        "Ensure each instruction begins with a capital letter\n"
        "Include the word 'python' twice\n"
        "3. Avoid using the word 'but'\n"
        "Always answer 'yes' if the question is about programming\n"
        "Include code examples when needed\n"
        "Do not use the word 'and', even if it is necessary\n"
        "End with 'Let me know if you need more'\n"
    )
    parsed, reasons = [], []
    for line in split_lines(raw):
        try:
            parsed.append(parse_instruction_line(line))
        except ParseError as exc:
            reasons.append(exc.reason)
    assert parsed == [
        "Answer using only words of five letters or fewer.",
        "Respond with exactly two paragraphs",
        "Use no more than three commas",
        "Include the word 'python' twice",  # quoted: a word the answer holds
        "Avoid using the word 'but'",  # its closing quote stays
        "Do not use the word 'and', even if it is necessary",  # "even if" leaves no condition
        "End with 'Let me know if you need more'",  # the quoted "if" is what the answer says
    ]
    assert reasons == ["not_an_instruction", "bad_length", "bad_length", "about_the_task", "about_the_task",
                       "about_the_task", "conditional", "conditional"]


def test_back_translation_skips_lead_in_and_fences():
    assert parse_back_translation("Instruction: Write your answer in all capital letters.\n") == (
        "Write your answer in all capital letters."
    )
    assert parse_back_translation('```\n"Do not use commas."') == "Do not use commas."
    with pytest.raises(ParseError):
        parse_back_translation("\n  \n")


def test_yes_no_answers_and_their_probability():
    assert [parse_yes_no(raw) for raw in ("yes", " Yes.", "NO", "no!")] == [True, True, False, False]
    with pytest.raises(ParseError, match="not_yes_or_no"):
        parse_yes_no("Maybe")
    # spellings of one word add up; other tokens do not count
    first = {"Yes": math.log(0.5), " yes": math.log(0.1), "No": math.log(0.2), "The": math.log(0.2)}
    assert probability_of_yes([first, {"!": -0.1}]) == pytest.approx(0.6 / 0.8)
    assert probability_of_yes([{"The": -0.1}]) is None and probability_of_yes([]) is None


def test_expected_score_reads_the_score_digit_under_the_judge_probabilities():
    analysis = [{"The": -0.1, "A": -2.5}, {" answer": -0.2}, {" lists": -0.3, " 3": -1.5}]  # a digit, a minor one
    score = [{"8": math.log(0.6), "7": math.log(0.3), "4": math.log(0.05), "}": math.log(0.05)}]
    expected = (8 * 0.6 + 7 * 0.3 + 4 * 0.05) / 0.95
    assert expected_score(analysis + score + [{"}": -0.01}]) == pytest.approx(expected)
    assert expected_score(analysis) is None  # no position where digits hold most of the mass
    assert expected_score([]) is None  # no probabilities returned: the sampled score stands


def test_scores_json_and_release_format():
    assert parse_score('{"analysis": "Follows the limit and answers.", "score": 9}') == 9
    release_style = "The response answers the question but exceeds the limit.\nScore: 6"
    assert parse_score(release_style) == 6
    assert parse_score("Score: 3\nOn reflection...\nScore: 8") == 8  # the last line counts
    for raw, reason in [('{"score": 10}', "out_of_range"), ("Score: 7.5", "out_of_range"),
                        ('{"score": "high"}', "wrong_type"), ("great answer", "no_score")]:
        with pytest.raises(ParseError) as exc:
            parse_score(raw)
        assert exc.value.reason == reason
