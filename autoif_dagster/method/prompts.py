"""Prompt builders and the JSON schemas of the outputs the method expects as JSON.

A prompt is a list of chat messages; the LLM resource renders it with the model's template.
"""

import json
from collections.abc import Sequence

Messages = list[dict[str, str]]

NLI_LABELS = ("entailment", "neutral", "contradiction")


def _user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


AUGMENT_TASK = (
    "Write new instructions that constrain the FORMAT of an answer (length, letters, words, "
    "punctuation, structure), such that a short Python function can check whether an answer "
    "follows them. No instructions about style, tone, metaphors or translation. Write one "
    "instruction per line and nothing else."
)


def augment_prompt(examples: Sequence[str], n_new: int = 3) -> Messages:
    """Few-shot as chat turns: earlier "requests" answered with seed instructions. Small models
    imitate demonstrated turns far better than a list of examples inside one message."""
    ask = f"Write {n_new} new instructions."
    messages: Messages = []
    for start in range(0, len(examples) - n_new + 1, n_new):
        messages.append({"role": "user", "content": f"{AUGMENT_TASK}\n{ask}" if not messages else ask})
        messages.append({"role": "assistant", "content": "\n".join(examples[start : start + n_new])})
    messages.append({"role": "user", "content": f"{AUGMENT_TASK}\n{ask}" if not messages else ask})
    return messages


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


VERIFIER_TASK = (
    "Write a Python function `evaluate(response)` that returns True if the string `response` "
    "follows the instruction and False otherwise, using only the standard library, and test "
    "cases: responses with the output `evaluate` must give. Reply with one JSON object with keys "
    '"func" (the source code as a string) and "cases" (a list of {"input": str, "output": bool}).'
)

# Worked examples shown as earlier chat turns (for instructions other than the one asked for).
VERIFIER_EXAMPLES = [
    ("Answer in fewer than 50 words", "def evaluate(response):\n    return len(response.split()) < 50",
     [("A short answer.", True), (" ".join(["word"] * 60), False)]),
    ("Do not use any question marks", "def evaluate(response):\n    return '?' not in response",
     [("I am fine.", True), ("How are you?", False)]),
    ("Start your answer with the word 'Yes'", "def evaluate(response):\n    return response.strip().startswith('Yes')",
     [("Yes, it is.", True), ("No.", False)]),
]


def verifier_prompt(instruction: str, n_cases: int) -> Messages:
    def ask(text: str) -> str:
        return f"Instruction: {text}\nWrite `evaluate` and {n_cases} test cases as JSON."

    messages: Messages = []
    for text, func, cases in VERIFIER_EXAMPLES:
        messages.append({"role": "user", "content": f"{VERIFIER_TASK}\n{ask(text)}" if not messages else ask(text)})
        answer = {"func": func, "cases": [{"input": i, "output": o} for i, o in cases]}
        messages.append({"role": "assistant", "content": json.dumps(answer)})
    messages.append({"role": "user", "content": ask(instruction)})
    return messages


BACK_TRANSLATION_TASK = (
    "A Python function checks whether a response follows an instruction. Write that instruction "
    "as one short imperative sentence addressed to the person writing the response. Reply with "
    "the instruction only."
)


def back_translation_prompt(func: str) -> Messages:
    """Few-shot as chat turns, reusing the verifier examples in the other direction."""
    messages: Messages = []
    for instruction, example_func, _ in VERIFIER_EXAMPLES:
        prefix = f"{BACK_TRANSLATION_TASK}\n" if not messages else ""
        messages.append({"role": "user", "content": f"{prefix}```python\n{example_func}\n```"})
        messages.append({"role": "assistant", "content": instruction})
    messages.append({"role": "user", "content": f"```python\n{func}\n```"})
    return messages


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
