"""How well a kept verifier agrees with a benchmark checker that checks its instruction exactly
(a seed's `reference`): both judge the same pool of texts, and the verifier's balanced
accuracy against the checker's verdicts is its precision estimate.

The pool is the round's own texts (answers, the supervisor's test inputs), each also changed
the way its instruction is about (lowercased and uppercased for a case rule, cut below and
padded past a word limit, the end phrase appended, ...), so that both verdicts occur and the
edits sit near the rule's boundary. This measures the supervisor's verifiers; it never writes
one, and nothing of a reference checker reaches a prompt.
"""

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# A verifier at or above this balanced accuracy counts as checking its instruction.
PRECISE = 0.9


def _words(text: str, n: int) -> str:
    """`text`'s words, repeated or cut to exactly n."""
    words = text.split() or ["word"]
    return " ".join((words * (n // len(words) + 1))[:n])


def _word_limit(text: str, kw: dict) -> list[str]:
    n = int(kw["num_words"])
    return [_words(text, k) for k in (max(n - 1, 1), n, n + 1)]


def _without(text: str, words: Sequence[str]) -> str:
    return re.sub(r"\b(" + "|".join(map(re.escape, words)) + r")\b", "", text, flags=re.IGNORECASE)


# checker id -> the texts `text` becomes when changed the way the checker's rule is about
EDITS: dict[str, Callable[[str, dict], list[str]]] = {
    "change_case:english_lowercase": lambda t, kw: [t.lower(), t.upper(), t.lower().capitalize()],
    "change_case:english_capital": lambda t, kw: [t.upper(), t.lower(), t[:1].lower() + t[1:].upper()],
    "punctuation:no_comma": lambda t, kw: [t.replace(",", ""), t.replace(",", "") + ", and so on."],
    "length_constraints:number_words": _word_limit,
    "startend:end_checker": lambda t, kw: [f"{t.rstrip()} {kw['end_phrase']}", f"{t.rstrip()} {kw['end_phrase']} Bye.",
                                           f"{kw['end_phrase']} {t.strip()}"],
    "startend:quotation": lambda t, kw: [f'"{t.strip()}"', t.strip().strip('"'), f'"{t.strip()}'],
    "keywords:letter_frequency": lambda t, kw: [re.sub(kw["letter"], "", t, flags=re.IGNORECASE),
                                                t + " " + kw["letter"] * int(kw["let_frequency"])],
    "keywords:frequency": lambda t, kw: [_without(t, [kw["keyword"]]) + f" {kw['keyword']}" * k
                                         for k in (int(kw["frequency"]) - 1, int(kw["frequency"]))],
    "keywords:forbidden_words": lambda t, kw: [_without(t, kw["forbidden_words"]),
                                               f"{_without(t, kw['forbidden_words'])} {kw['forbidden_words'][-1]}"],
    "detectable_format:json_format": lambda t, kw: [json.dumps({"answer": t}), f"```json\n{json.dumps({'answer': t})}\n```",
                                                    json.dumps({"answer": t})[:-1]],
    "detectable_content:postscript": lambda t, kw: [f"{t.rstrip()}\n\n{kw['postscript_marker']} One more thing.",
                                                    t.replace(kw["postscript_marker"], ""),
                                                    f"{kw['postscript_marker']} {t}"],
}


def pool(texts: Sequence[str], reference: dict) -> list[str]:
    """`texts` and each one changed the ways the reference's rule is about, once each, in order."""
    edit = EDITS.get(reference["checker"], lambda t, kw: [])
    out = dict.fromkeys(t for text in texts for t in (text, *edit(text, reference.get("kwargs", {}))))
    return list(out)


@dataclass(frozen=True)
class Agreement:
    """A verifier's verdicts against the reference's on one pool."""

    true_positive: int
    false_negative: int
    true_negative: int
    false_positive: int

    @property
    def balanced_accuracy(self) -> float | None:
        """The mean of the rates on the texts the reference passes and on those it fails; None
        where the pool holds only one kind (nothing to balance)."""
        positives = self.true_positive + self.false_negative
        negatives = self.true_negative + self.false_positive
        if not positives or not negatives:
            return None
        return (self.true_positive / positives + self.true_negative / negatives) / 2


def agreement(verifier: Sequence[bool], reference: Sequence[bool]) -> Agreement:
    """Counts of (verifier, reference) verdict pairs; a verifier's error counts as a fail."""
    if len(verifier) != len(reference):
        raise ValueError(f"{len(verifier)} verifier verdicts for {len(reference)} reference verdicts")
    pairs = list(zip(verifier, reference))
    return Agreement(true_positive=pairs.count((True, True)), false_negative=pairs.count((False, True)),
                     true_negative=pairs.count((False, False)), false_positive=pairs.count((True, False)))


def precision(accuracies: Sequence[float | None]) -> float | None:
    """The share of measurable verifiers at or above PRECISE; None with none measurable."""
    measured = [a for a in accuracies if a is not None]
    return sum(a >= PRECISE for a in measured) / len(measured) if measured else None


def ranking_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """How well a judge's scores rank labelled items: the chance that an item labelled True
    scores above one labelled False (ties count half)."""
    right = [s for s, y in zip(scores, labels, strict=True) if y]
    wrong = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not right or not wrong:
        raise ValueError("ranking needs items of both labels")
    return sum((r > w) + 0.5 * (r == w) for r in right for w in wrong) / (len(right) * len(wrong))
