"""Prompt builders and the JSON schemas of the outputs the method expects as JSON.

A prompt is a list of chat messages; the LLM resource renders it with the model's template.
"""

import json
from collections.abc import Sequence

Messages = list[dict[str, str]]

NLI_LABELS = ("entailment", "neutral", "contradiction")


def _user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def augment_prompt(examples: Sequence[str], n_new: int = 10) -> Messages:
    listed = "\n".join(f"- {e}" for e in examples)
    return _user(
        "You write instructions that constrain the FORMAT of an answer, such that a short "
        "Python function can check whether an answer follows them.\n"
        f"Examples:\n{listed}\n\n"
        f"Write {n_new} new instructions of this kind, different from the examples. Each must "
        "be about format (length, letters, words, punctuation, structure), not about style, "
        "tone, metaphors or translation. Write one instruction per line and nothing else."
    )


def verifier_schema(n_cases: int) -> dict:
    return {
        "type": "object",
        "properties": {
            "func": {"type": "string"},
            "cases": {
                "type": "array",
                "minItems": n_cases,
                "maxItems": n_cases,
                "items": {
                    "type": "object",
                    "properties": {"input": {"type": "string"}, "output": {"type": "boolean"}},
                    "required": ["input", "output"],
                },
            },
        },
        "required": ["func", "cases"],
    }


# A one-shot example of the JSON expected (for an instruction other than the one asked for).
VERIFIER_EXAMPLE = {
    "func": "def evaluate(response):\n    return len(response.split()) < 50",
    "cases": [
        {"input": "A short answer.", "output": True},
        {"input": " ".join(["word"] * 60), "output": False},
    ],
}


def verifier_prompt(instruction: str, n_cases: int) -> Messages:
    return _user(
        "Write a Python function `evaluate(response)` that returns True if the string "
        "`response` follows the instruction below and False otherwise, using only the "
        "standard library.\n"
        f"Instruction: {instruction}\n"
        f"Also write {n_cases} test cases: responses with the output `evaluate` must give. "
        'Reply with one JSON object with keys "func" (the source code as a string) and '
        '"cases" (a list of {"input": str, "output": bool}).\n'
        "Example for the instruction 'Answer in fewer than 50 words':\n"
        f"{json.dumps(VERIFIER_EXAMPLE)}"
    )


def back_translation_prompt(func: str) -> Messages:
    return _user(
        "This Python function checks whether a response follows an instruction:\n"
        f"```python\n{func}\n```\n"
        "Write that instruction as one short imperative sentence, addressed to the person "
        "writing the response. Reply with the instruction only."
    )


NLI_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": list(NLI_LABELS)}},
    "required": ["label"],
}


def nli_prompt(premise: str, hypothesis: str) -> Messages:
    return _user(
        "Do two instructions ask for the same thing?\n"
        f"Instruction A: {premise}\nInstruction B: {hypothesis}\n"
        "Answer 'entailment' if following A means following B, 'contradiction' if they "
        "demand incompatible things, otherwise 'neutral'. "
        'Reply with JSON: {"label": "entailment" | "neutral" | "contradiction"}.'
    )


def instruction_query_prompt(instruction: str, query: str) -> str:
    """The user turn of an SFT sample: the query, with the instruction to follow strictly."""
    return f"{query}\n\nFollow this instruction strictly in your answer: {instruction}"


SCORE_SCHEMA = {
    "type": "object",
    "properties": {
        "analysis": {"type": "string", "maxLength": 400},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
    },
    "required": ["analysis", "score"],
}


def quality_prompt(instruction: str, query: str, response: str) -> Messages:
    return _user(
        "Judge whether a response answers a query while following an instruction.\n"
        f"[Instruction] {instruction}\n[Query] {query}\n[Response] {response}\n"
        "The response must follow the instruction strictly, even at some cost to helpfulness. "
        "Score from 0 (unrelated to the query) to 10 (helpful and clearly related). "
        'Reply with JSON: {"analysis": a brief analysis, "score": an integer 0-10}.'
    )
