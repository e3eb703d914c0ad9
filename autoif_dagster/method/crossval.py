"""Cross-validation: execution feedback between an instruction's functions and test cases.

The pooled functions judge the pooled cases; a case survives when enough functions agree with
its label, and a function survives when it is accurate enough on the surviving cases.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..sandbox.protocol import COMPILE_ERROR, NO_EVALUATE, Verdict


@dataclass
class CrossValResult:
    kept_functions: list[tuple[int, float]] = field(default_factory=list)  # (index, accuracy)
    kept_cases: list[tuple[int, float]] = field(default_factory=list)  # (index, agreement)
    drop_reason: str | None = None  # why the whole instruction was dropped
    function_drops: Counter = field(default_factory=Counter)  # reason -> count


@dataclass
class Pool:
    """An instruction's distinct functions (source -> the candidates that wrote it) and its
    distinct (input, label) cases, pooled across its generations in order."""

    funcs: dict[str, list[str]] = field(default_factory=dict)
    cases: dict[tuple[str, bool], None] = field(default_factory=dict)


def pool_candidates(candidates: Iterable[dict]) -> dict[str, Pool]:
    """verifier_candidates rows -> instruction id -> its pool."""
    pools: dict[str, Pool] = {}
    for row in candidates:
        pool = pools.setdefault(row["instruction_id"], Pool())
        pool.funcs.setdefault(row["func"], []).append(row["candidate_id"])
        for case in row["cases"]:
            pool.cases[(case["input"], case["output"])] = None
    return pools


def settled(result: "CrossValResult", verdicts: list[list[Verdict]]) -> bool:
    """The instruction is kept and its functions (`verdicts[f][c]`, as for cross_validate) judge
    every pooled case alike, without an error: more generations would only add to what they
    already agree on. (A case both functions reject is the case's fault, not a disagreement.)
    On the candidates of three rounds (2026-11-12, -28, 12-07), 58 of 197 instructions were
    settled after two generations; two more for every instruction raised those kept from 66 to 86."""
    return (result.drop_reason is None and len(result.kept_functions) == len(verdicts)
            and all(len({v.kind for v in column}) == 1 for column in zip(*verdicts)))


def _unusable(row: list[Verdict]) -> str | None:
    """A function whose every verdict is a compile error or a missing evaluate never ran."""
    kinds = {v.kind for v in row}
    if kinds and kinds <= {COMPILE_ERROR}:
        return "compile_error"
    if kinds and kinds <= {NO_EVALUATE}:
        return "no_evaluate"
    return None


def cross_validate(
    labels: list[bool],
    verdicts: list[list[Verdict]],
    *,
    min_functions: int,
    min_cases: int,
    case_agreement_above: float,
    function_min_accuracy: float,
) -> CrossValResult:
    """`verdicts[f][c]` is function f's verdict on case c, whose expected output is labels[c].

    A verdict agrees with a label when it is PASS for True or FAIL for False; errors never agree.
    A function is kept only if it is accurate enough and right on at least one agreed case of
    each label.
    """
    result = CrossValResult()
    usable = []
    for f, row in enumerate(verdicts):
        reason = _unusable(row)
        if reason:
            result.function_drops[reason] += 1
        else:
            usable.append(f)
    if len(usable) < min_functions:
        result.drop_reason = "too_few_functions"
        return result
    if len(labels) < min_cases:
        result.drop_reason = "too_few_cases"
        return result

    def agrees(f: int, c: int) -> bool:
        v = verdicts[f][c]
        return not v.is_error and v.passed == labels[c]

    for c in range(len(labels)):
        agreement = sum(agrees(f, c) for f in usable) / len(usable)
        if agreement > case_agreement_above:
            result.kept_cases.append((c, agreement))
    if not result.kept_cases:
        result.drop_reason = "no_agreed_cases"
        return result
    # Without an agreed case of each label, a function that accepts (or rejects) everything
    # would look perfectly accurate.
    positive = [c for c, _ in result.kept_cases if labels[c]]
    negative = [c for c, _ in result.kept_cases if not labels[c]]
    if not positive or not negative:
        result.drop_reason = "no_agreed_passing_case" if not positive else "no_agreed_failing_case"
        return result
    for f in usable:
        accuracy = sum(agrees(f, c) for c, _ in result.kept_cases) / len(result.kept_cases)
        if not any(agrees(f, c) for c in positive):
            result.function_drops["passes_no_positive_case"] += 1
        elif not any(agrees(f, c) for c in negative):
            result.function_drops["fails_no_negative_case"] += 1
        elif accuracy >= function_min_accuracy:
            result.kept_functions.append((f, accuracy))
        else:
            result.function_drops["below_accuracy"] += 1
    if not result.kept_functions:
        result.drop_reason = "no_accurate_function"
    return result


def probe_counts(rows: list[list[Verdict]], empty: list[Verdict]) -> dict[str, int]:
    """How many functions accept the empty string, accept every test input, reject every one.

    `rows[f]` are function f's verdicts on its instruction's test inputs, `empty[f]` its
    verdict on "". Errors count as rejections (they never pass a response)."""
    return {
        "accept_empty_string": sum(v.passed for v in empty),
        "accept_every_test_input": sum(bool(row) and all(v.passed for v in row) for row in rows),
        "reject_every_test_input": sum(bool(row) and not any(v.passed for v in row) for row in rows),
    }
