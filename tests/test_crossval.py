"""Cross-validation on verdict matrices like the sandbox returns for real verifier pools."""

from autoif_dagster.method.crossval import cross_validate
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
    # accuracy on kept cases: 1.0, 1.0, 1/3
    assert r.kept_functions == [(0, 1.0), (1, 1.0)]
    assert r.function_drops == {"below_accuracy": 1}
    assert r.drop_reason is None


def test_release_rule_keeps_a_case_any_function_agrees_with():
    labels = [True, False]
    verdicts = [[P, P], [F, P], [F, P]]
    r = cross_validate(labels, verdicts, **RELEASE)
    assert [c for c, _ in r.kept_cases] == [0]  # case 1: no function says False
    assert r.kept_functions == [(0, 1.0)]


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
    labels = [True, True, False]
    verdicts = [[P, P, P], [P, P, P], [F, P, F]]
    r = cross_validate(labels, verdicts, **{**PAPER, "function_min_accuracy": 0.9})
    # agreement 1, 1, 1/3 -> cases 0,1 kept; all three functions are right on both
    assert len(r.kept_functions) == 2 and r.function_drops == {"below_accuracy": 1}
