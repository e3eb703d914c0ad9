"""LLM text -> typed records. Malformed output is data: each parser either returns a record
or raises ParseError with a short machine-readable reason, which the stages count and log.

Real supervisor output is messy (see the AutoIF release's samples): JSON inside ``` fences
or surrounded by prose, raw newlines inside JSON strings, code with escaped "\\n" instead of
newlines, booleans written as "true"/"False", cases as [input, output] pairs.
"""

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .prompts import FOLLOWS_KEY, SCORE_MAX, VIOLATES_KEY


class ParseError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- instructions ---------------------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.)\]:]|[a-zA-Z][.)])\s*")
MIN_INSTRUCTION_CHARS = 10
MAX_INSTRUCTION_CHARS = 200


def normalise_instruction(line: str) -> str:
    """Strip list markers, wrapping quotes and redundant whitespace from one line."""
    text = _BULLET.sub("", line.strip()).strip()
    # a quote on both ends wraps the line; one at the end alone closes a quoted word ('but')
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return " ".join(text.split())


# Words of a line about the checker or the prompt rather than the answer ("The function should
# take a single argument", "Use only the words listed in your instruction"): augmentation wrote
# these, they passed cross-validation and NLI, and their SFT rows answered "Correct". Any
# "instruction" is the task's: "Ensure each instruction begins with a capital letter" (26 such
# lines in seven rounds, none a rule for an answer) was kept with `response[0].isupper()`.
_ABOUT_THE_TASK = re.compile(r"\b(functions?|python|argument|parameters?|returns?|inputs?|instructions?)\b", re.I)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
# A requirement that holds only under a condition the response alone does not show ("Always answer
# 'yes' if the question is about programming", "Include code examples if needed", "Use
# contractions when you can"): no function of the response can check it, and the one kept for
# the first became `response.lower() == 'yes'`. "even if" keeps the requirement unconditional.
_CONDITIONAL = re.compile(r"(?<!\beven )\b(?:if|when|whenever|unless|depending on)\b", re.I)


def parse_instruction_line(line: str) -> str:
    """One line of an augmentation reply -> an instruction, or ParseError."""
    text = normalise_instruction(line)
    if not text:
        raise ParseError("empty")
    if not MIN_INSTRUCTION_CHARS <= len(text) <= MAX_INSTRUCTION_CHARS:
        raise ParseError("bad_length", text[:80])
    if text.endswith((":", "?")) or not re.search(r"[A-Za-z]{3}", text):
        raise ParseError("not_an_instruction", text[:80])
    unquoted = _QUOTED.sub("", text)  # a quoted word is what the answer holds
    if _ABOUT_THE_TASK.search(unquoted):
        raise ParseError("about_the_task", text[:80])
    if _CONDITIONAL.search(unquoted):
        raise ParseError("conditional", text[:80])
    return text


def split_lines(raw: str) -> list[str]:
    return [line for line in raw.splitlines() if line.strip()]


# --- JSON extraction ------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def extract_json(raw: str) -> object:
    """The first JSON value found in `raw`: the whole text, a fenced block, or the outermost
    {...}. `strict=False` accepts raw control characters (newlines) inside strings."""
    candidates = [raw.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(raw)]
    start, end = raw.find("{"), raw.rfind("}")
    if 0 <= start < end:
        candidates.append(raw[start : end + 1])
    for text in candidates:
        try:
            return json.loads(text, strict=False)
        except json.JSONDecodeError:
            continue
    raise ParseError("not_json", raw[:80])


# --- verifiers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierSample:
    func: str
    cases: tuple[tuple[str, bool], ...]
    bad_cases: int  # cases dropped for wrong types or missing keys


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _BOOL_WORDS.get(value.strip().lower())
    return None


def _as_case(item: object) -> tuple[str, bool] | None:
    if isinstance(item, dict):
        inp, out = item.get("input"), item.get("output")
    elif isinstance(item, (list, tuple)) and len(item) == 2:
        inp, out = item
    else:
        return None
    label = _as_bool(out)
    if not isinstance(inp, str) or label is None:
        return None
    return inp, label


def unescape_code(func: str) -> str:
    """Code written with literal '\\n' escapes (as prompts that say "use \\n" invite) and no
    real newline is turned back into multi-line source."""
    if "\n" not in func and "\\n" in func:
        return func.replace("\\n", "\n").replace("\\t", "\t")
    return func


def parse_verifier(raw: str) -> VerifierSample:
    obj = extract_json(raw)
    if not isinstance(obj, dict):
        raise ParseError("wrong_type", f"expected an object, got {type(obj).__name__}")
    if "func" not in obj:
        raise ParseError("missing_key", "func")
    func = obj["func"]
    if not isinstance(func, str):
        raise ParseError("wrong_type", f"func is {type(func).__name__}")
    func = unescape_code(func).strip()
    if not func:
        raise ParseError("empty", "func")
    if not re.search(r"^\s*def\s+evaluate\s*\(", func, re.MULTILINE):
        # a signature, a bare name or prose in the code field: nothing the sandbox can run
        raise ParseError("no_function", func[:80])
    raw_cases = obj.get("cases", [])
    if not isinstance(raw_cases, list):
        raw_cases = []
    # our schema's form: responses that follow and that break the instruction, two lists
    for key, label in ((FOLLOWS_KEY, True), (VIOLATES_KEY, False)):
        if isinstance(obj.get(key), list):
            raw_cases += [{"input": text, "output": label} for text in obj[key]]
    cases = [c for c in map(_as_case, raw_cases) if c is not None]
    return VerifierSample(func=func, cases=tuple(cases), bad_cases=len(raw_cases) - len(cases))


# --- back-translation, NLI, quality score ---------------------------------------------------

_LEADIN = re.compile(r"^(?:the\s+)?instruction\s*(?:is)?\s*[:\-]\s*", re.IGNORECASE)


def parse_response(raw: str) -> str:
    """A sampled answer, stripped; an empty one is dropped."""
    text = raw.strip()
    if not text:
        raise ParseError("empty")
    return text


def parse_back_translation(raw: str) -> str:
    for line in split_lines(raw):
        text = normalise_instruction(_LEADIN.sub("", line.strip()))
        if text.startswith("```"):
            continue
        if len(text) >= MIN_INSTRUCTION_CHARS:
            return text[:MAX_INSTRUCTION_CHARS]
    raise ParseError("empty", raw[:80])


def parse_yes_no(raw: str) -> bool:
    """A one-word yes/no answer (any case, trailing punctuation) -> True/False."""
    word = raw.strip().strip(".!").lower()
    if word not in ("yes", "no"):
        raise ParseError("not_yes_or_no", raw[:40])
    return word == "yes"


def probability_of_yes(top_logprobs: Sequence[dict[str, float]]) -> float | None:
    """P(yes) / (P(yes) + P(no)) at the answer's first token, over its alternatives in any case
    and spacing; None where neither is among them."""
    if not top_logprobs:
        return None
    mass = {"yes": 0.0, "no": 0.0}
    for token, logprob in top_logprobs[0].items():
        word = token.strip().lower()
        if word in mass:
            mass[word] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total else None


_SCORE_LINE = re.compile(r"score\s*[:=]?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_score(raw: str) -> int:
    """A 0-9 score from {"score": n} or a 'Score: n' line (the release's plain format)."""
    value: object = None
    try:
        obj = extract_json(raw)
        if isinstance(obj, dict):
            value = obj.get("score")
    except ParseError:
        pass
    if value is None:
        matches = _SCORE_LINE.findall(raw)
        if not matches:
            raise ParseError("no_score", raw[-80:])
        value = matches[-1]
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParseError("wrong_type", repr(value)[:40]) from None
    if not 0 <= score <= SCORE_MAX or score != int(score):
        raise ParseError("out_of_range", repr(value)[:40])
    return int(score)


_SCORE_DIGITS = {str(d) for d in range(SCORE_MAX + 1)}


def expected_score(top_logprobs: Sequence[dict[str, float]]) -> float | None:
    """The score's expectation under the judge's own probabilities: at the last position where
    digits hold most of the mass (the score, wherever the reply puts it), the mean of the digits
    0-SCORE_MAX weighted by their probabilities. None without such a position (no logprobs
    were returned)."""
    for alternatives in reversed(top_logprobs):
        mass = [0.0] * (SCORE_MAX + 1)  # per digit, over its spellings ("7", " 7")
        for token, logprob in alternatives.items():
            if token.strip() in _SCORE_DIGITS:
                mass[int(token.strip())] += math.exp(logprob)
        if sum(mass) > 0.5:
            return sum(d * p for d, p in enumerate(mass)) / sum(mass)
    return None
