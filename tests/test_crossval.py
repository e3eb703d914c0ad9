"""Cross-validation on verdict matrices like the sandbox returns for real verifier pools."""

import re

from autoif_dagster.method.crossval import cross_validate, pool_candidates, probe_counts, settled
from autoif_dagster.sandbox.protocol import Verdict

P, F = Verdict("pass"), Verdict("fail")
BOOM = Verdict("exception", "IndexError: list index out of range")
COMPILE = Verdict("compile_error", "SyntaxError: invalid syntax")
NO_EVAL = Verdict("no_evaluate")

RELEASE = dict(min_functions=1, min_cases=1, case_agreement_above=0.0, function_min_accuracy=0.8)
PAPER = dict(min_functions=1, min_cases=1, case_agreement_above=0.5, function_min_accuracy=0.51)


def test_majority_keeps_agreed_cases_and_accurate_functions():
    labels = [True, False, True, False]
    verdicts = [
        [P, F, P, F],  # perfect
        [P, F, P, P],  # wrong on case 3
        [P, P, F, P],  # mostly wrong
    ]
    r = cross_validate(labels, verdicts, **PAPER)
    # agreement per case: 3/3, 2/3, 2/3, 1/3 -> case 3 is dropped (not above 0.5)
    assert [c for c, _ in r.kept_cases] == [0, 1, 2]
    # accuracy on kept cases: 1.0, 1.0, 1/3 (and the third passes the failing case 1)
    assert r.kept_functions == [(0, 1.0), (1, 1.0)]
    assert r.function_drops == {"fails_no_negative_case": 1}
    assert r.drop_reason is None


def test_release_rule_keeps_a_case_any_function_agrees_with():
    labels = [True, False, False]
    verdicts = [[P, F, P], [P, F, F], [F, P, P]]
    # agreement per case: 2/3, 2/3, 1/3: the paper's majority drops case 2, the release keeps it
    assert [c for c, _ in cross_validate(labels, verdicts, **PAPER).kept_cases] == [0, 1]
    r = cross_validate(labels, verdicts, **RELEASE)
    assert [c for c, _ in r.kept_cases] == [0, 1, 2]
    assert r.kept_functions == [(1, 1.0)]
    assert r.function_drops == {"below_accuracy": 1, "passes_no_positive_case": 1}


def test_cases_of_one_label_keep_no_instruction():
    assert cross_validate([True, True], [[P, P]], **PAPER).drop_reason == "no_agreed_failing_case"
    assert cross_validate([False, False], [[F, F]], **PAPER).drop_reason == "no_agreed_passing_case"
    # a failing case exists but no function agrees with it: one-sided after agreement
    assert cross_validate([True, True, False], [[P, P, P], [P, P, P]], **PAPER).drop_reason == "no_agreed_failing_case"


def test_accept_all_and_reject_all_functions_never_survive_even_when_accurate_enough():
    perfect = [P, P, P, P, F]
    r = cross_validate([True, True, True, True, False], [[P] * 5, perfect, perfect], **RELEASE)
    assert r.kept_functions == [(1, 1.0), (2, 1.0)]  # accepting everything scores 0.8 here, the bar
    assert r.function_drops == {"fails_no_negative_case": 1}
    perfect = [P, F, F, F, F]
    r = cross_validate([True, False, False, False, False], [[F] * 5, perfect, perfect], **RELEASE)
    assert r.kept_functions == [(1, 1.0), (2, 1.0)]
    assert r.function_drops == {"passes_no_positive_case": 1}


def test_probe_counts():
    rows = [[P, P], [F, F], [P, F], [BOOM, P], []]
    empty = [P, F, F, P, P]
    assert probe_counts(rows, empty) == {
        "accept_empty_string": 3, "accept_every_test_input": 1, "reject_every_test_input": 1}


def test_errors_never_agree_and_broken_functions_do_not_vote():
    labels = [True, False]
    verdicts = [[P, F], [BOOM, BOOM], [COMPILE, COMPILE], [NO_EVAL, NO_EVAL]]
    r = cross_validate(labels, verdicts, **PAPER)
    assert r.function_drops == {"compile_error": 1, "no_evaluate": 1}
    # only two functions vote: the perfect one and the raising one (1/2 is not above 0.5)
    assert r.kept_cases == []
    assert r.drop_reason == "no_agreed_cases"


def test_minimum_pool_sizes():
    labels = [True] * 3
    verdicts = [[P, P, P], [P, P, P]]
    assert cross_validate(labels, verdicts, **{**PAPER, "min_functions": 3}).drop_reason == "too_few_functions"
    assert cross_validate(labels, verdicts, **{**PAPER, "min_cases": 10}).drop_reason == "too_few_cases"
    assert cross_validate(labels, [[COMPILE] * 3], **PAPER).drop_reason == "too_few_functions"


def test_no_function_accurate_enough():
    labels = [True, False, True, False]
    verdicts = [[P, F, P, P], [P, F, F, F], [P, P, P, F]]
    r = cross_validate(labels, verdicts, **{**PAPER, "function_min_accuracy": 0.9})
    # agreement 1, 2/3, 2/3, 2/3 -> every case kept; every function is right on 3 of 4
    assert len(r.kept_cases) == 4 and r.kept_functions == []
    assert r.function_drops == {"below_accuracy": 3} and r.drop_reason == "no_accurate_function"


def test_a_wrong_function_whose_own_cases_agree_with_it_falls_once_independent_generations_exist():
    """'Every sentence must end with an exclamation mark', as the 1.5B wrote it: one generation
    checks only the last sentence and its own cases cannot tell; alone it is kept. Two more
    generations whose functions check every sentence (written differently: the pool is of
    distinct sources, one vote each) bring cases that break a first sentence, the majority
    keeps them, and the wrong function's accuracy falls below the bar."""
    wrong = lambda text: text.endswith("!")  # noqa: E731
    right = lambda text: all(s.endswith("!") for s in text.replace("! ", "!\n").replace(". ", ".\n").splitlines())  # noqa: E731
    also_right = lambda text: not re.search(r"[.?](\s|$)", text) and text.endswith("!")  # noqa: E731
    own = [("I love it!", True), ("I love it.", False)]
    independent = [("Great! Wow!", True), ("Great. Wow!", False), ("Yes! No!", True), ("Yes. No!", False)]

    def verdicts(functions, cases):
        return [[P if f(text) else F for text, _ in cases] for f in functions]

    default = dict(min_functions=1, min_cases=2, case_agreement_above=0.5, function_min_accuracy=0.8)
    alone = cross_validate([label for _, label in own], verdicts([wrong], own), **default)
    assert alone.kept_functions == [(0, 1.0)]
    pooled = own + independent
    result = cross_validate([label for _, label in pooled], verdicts([wrong, right, also_right], pooled), **default)
    assert [f for f, _ in result.kept_functions] == [1, 2]
    assert result.function_drops == {"below_accuracy": 1}


def test_pools_merge_an_instructions_generations_and_keep_first_seen_order():
    def row(cid, iid, func, *cases):
        return {"candidate_id": cid, "instruction_id": iid, "func": func,
                "cases": [{"input": i, "output": o} for i, o in cases]}

    pools = pool_candidates([row("c1", "a", "f", ("x", True), ("y", False)), row("c2", "b", "g", ("x", True)),
                             row("c3", "a", "f", ("y", False), ("z", True)), row("c4", "a", "h")])
    assert list(pools) == ["a", "b"]
    assert pools["a"].funcs == {"f": ["c1", "c3"], "h": ["c4"]}  # one source, both candidates that wrote it
    assert list(pools["a"].cases) == [("x", True), ("y", False), ("z", True)]


def test_an_instruction_is_settled_only_when_its_functions_judge_every_case_alike():
    labels = [True, False, True, False]
    alike = [[P, F, P, F], [P, F, P, F]]
    assert settled(cross_validate(labels, alike, **PAPER), alike)
    # a case both functions get wrong is dropped as the case's fault: still settled
    wrong_case = [[P, F, P, P], [P, F, P, P]]
    assert settled(cross_validate(labels, wrong_case, **PAPER), wrong_case)
    # two functions that differ on one case: that case drops (1 of 2 is no majority) and both
    # look perfect on the rest, but they disagree, so the instruction asks for more
    differ = [[P, F, P, F], [P, F, P, P]]
    result = cross_validate(labels, differ, **PAPER)
    assert result.kept_functions == [(0, 1.0), (1, 1.0)] and not settled(result, differ)
    broken = [[P, F, P, F], [COMPILE] * 4]
    result = cross_validate(labels, broken, **PAPER)
    assert result.kept_functions == [(0, 1.0)] and not settled(result, broken)  # not every function kept
    one_label = [[P, P]]
    assert not settled(cross_validate([True, True], one_label, **PAPER), one_label)  # dropped: no failing case
