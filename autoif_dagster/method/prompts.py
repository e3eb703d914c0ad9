"""Prompt builders and the JSON schemas of the outputs the method expects as JSON.

A prompt is a list of chat messages; the LLM resource renders it with the model's template.
"""

from collections.abc import Sequence

Messages = list[dict[str, str]]

AUGMENT_TASK = (
    "Write new instructions that a user could add to any question to constrain the FORMAT of the "
    "answer (its length, letters, words, punctuation or structure), such that a short Python function "
    "can check whether an answer follows them. Each one is about the answer itself, never about "
    "instructions. No instructions about style, tone, metaphors or translation. Write one "
    "instruction per line and nothing else."
)
# "about the answer itself": without it, 4 of the default run's 12 new instructions were about
# instructions ("Use one word per instruction"); with it, 1 of 10.


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


# The keys the model fills, in order. Writing concrete responses that follow and break the
# instruction before the code keeps a small model on the instruction asked about, and a
# candidate can never bring test cases of only one label.
FOLLOWS_KEY = "responses_that_follow_the_instruction"
VIOLATES_KEY = "responses_that_break_the_instruction"


def verifier_schema(n_cases: int) -> dict:
    n_follow = max(1, (n_cases + 1) // 2)
    n_violate = max(1, n_cases - n_follow)

    def strings(n: int) -> dict:
        return {"type": "array", "minItems": n, "maxItems": n,
                "items": {"type": "string", "minLength": 1, "maxLength": 240}}

    return {
        "type": "object",
        "properties": {FOLLOWS_KEY: strings(n_follow), VIOLATES_KEY: strings(n_violate), "func": {"type": "string"}},
        "required": [FOLLOWS_KEY, VIOLATES_KEY, "func"],
    }


VERIFIER_TASK = (
    "You write test data and a checker for a format instruction given to a writer.\n"
    f'Reply with one JSON object. "{FOLLOWS_KEY}": short answers a writer could give (one to '
    "four sentences of ordinary text about any topic) that obey the instruction exactly. "
    f'"{VIOLATES_KEY}": the same answers, each changed just enough that it clearly breaks the '
    "instruction (leave out what it requires, add what it forbids, change the length, the letters or the "
    "ending); write the answers themselves, never a description of them. \"func\": Python source code "
    "of a function `def evaluate(response):` that returns True when the string `response` "
    "obeys the instruction and False otherwise; it must return True for the first list and "
    "False for the second. Check exactly what the instruction asks for. Standard library only."
)
# "the same answers, each changed just enough": asked only for answers "that break it", the
# 1.5B model wrote ones that obey it too ("Certainly, here's a response that breaks the
# instruction.") or that only say so; on the default run's 30 instructions, 11 instead of 9
# kept a verifier through cross-validation.


def verifier_prompt(instruction: str) -> Messages:
    """Zero-shot: with worked examples as chat turns, small models copy the examples' logic
    into functions for unrelated instructions; the JSON schema already fixes the format."""
    return [{"role": "system", "content": VERIFIER_TASK}, {"role": "user", "content": f"Instruction: {instruction}"}]


# Worked (instruction, function) pairs for back-translation. None is a packaged seed, and each
# is specific enough (a fruit word, four lines, the letter z) that a copy offered for another
# instruction fails that instruction's cross-validation or its NLI check.
VERIFIER_EXAMPLES = [
    ("Mention the word 'banana' at least three times",
     "def evaluate(response):\n    return response.lower().count('banana') >= 3"),
    ("Write exactly four lines",
     "def evaluate(response):\n    lines = [line for line in response.strip().splitlines() if line.strip()]\n"
     "    return len(lines) == 4"),
    ("Do not use the letter 'z' anywhere",
     "def evaluate(response):\n    return 'z' not in response.lower()"),
]


BACK_TRANSLATION_TASK = (
    "A Python function checks whether a response follows an instruction. Write that instruction "
    "as one short imperative sentence addressed to the person writing the response. Reply with "
    "the instruction only."
)


def back_translation_prompt(func: str) -> Messages:
    """Few-shot as chat turns, reusing the verifier examples in the other direction."""
    messages: Messages = []
    for instruction, example_func in VERIFIER_EXAMPLES:
        prefix = f"{BACK_TRANSLATION_TASK}\n" if not messages else ""
        messages.append({"role": "user", "content": f"{prefix}```python\n{example_func}\n```"})
        messages.append({"role": "assistant", "content": instruction})
    messages.append({"role": "user", "content": f"```python\n{func}\n```"})
    return messages


# The consistency judge asks the supervisor two questions about each kept function and reads
# its probability of "yes" (resources/nli.py): whether the back-translation is the same
# requirement as the instruction, and whether the function checks the instruction. Chosen on 40
# labelled pairs from real rounds (tests/fixtures/consistency_pairs.jsonl): the 1.5B answered
# "yes" to 37-40 of 40 whatever the prompt, but its probability of yes ranked them (AUC 0.90 for
# the first question with this system turn, 0.67 without; 0.88 for the second; 0.94 for their mean).
SAME_REQUIREMENT_TASK = (
    "You compare two format instructions given to a writer. They are the same only if every answer "
    "that follows one follows the other. A rule about the whole response is not the same as a rule "
    "about every sentence, line or word; characters are not words; containing a phrase is not the "
    "same as doing what it names."
)


def same_requirement_prompt(instruction: str, back_translation: str) -> Messages:
    return [{"role": "system", "content": SAME_REQUIREMENT_TASK},
            {"role": "user", "content": f"Instruction A: {instruction}\nInstruction B: {back_translation}\n"
                                        "Are A and B the same requirement? Answer yes or no."}]


def checks_instruction_prompt(instruction: str, func: str) -> Messages:
    return [{"role": "user", "content": f"Instruction: {instruction}\n```python\n{func}\n```\nDoes this function "
                                        "return True exactly for the responses that follow the instruction? "
                                        "Answer yes or no."}]


# The responding model's system turn while sampling (not part of the SFT sample): without it
# small models often answer with the instruction's own words ("Is there anything else?")
# and ignore the query; "concisely": a quarter of the default run's answers ran past
# max_tokens (dropped as truncated) without it.
RESPONSE_SYSTEM = (
    "Answer the user's request helpfully and concisely, in under 100 words unless the request "
    "or its instruction needs more. When they add a format instruction, follow it exactly "
    "while still answering the request in full: a title or heading it asks for comes with the "
    "answer, never in place of it."
)


def response_prompt(prompt: str) -> Messages:
    return [{"role": "system", "content": RESPONSE_SYSTEM}, {"role": "user", "content": prompt}]


def instruction_query_prompt(instruction: str, query: str) -> str:
    """The user turn of an SFT sample: the query, with the instruction to follow strictly."""
    return f"{query}\n\nFollow this instruction strictly in your answer: {instruction}"


# 0-9: each score is one token, so its probability is read off one position (a "1" could begin 10)
SCORE_MAX = 9
SCORE_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": SCORE_MAX}},
    "required": ["score"],
}


# Chosen on 90 answers from three real rounds, each labelled by reading (answers the query, or
# not: a bare title, the query or instruction restated, an acknowledgement, a wrong answer;
# tests/fixtures/quality_labels.jsonl). The expected score ranks them with AUC 0.83 under this
# prompt; 0.65 under the earlier one, which asked for a one-sentence analysis before the score
# and listed what fails first: the 1.5B then began most analyses with "The response does not
# answer the query" and scored good answers 0-2.
QUALITY_TASK = (
    "You grade how well a response answers a user's query. The user also gave a format "
    "instruction, which is checked separately: judge only whether the content answers the query.\n"
    "7-9: it answers the query correctly and helpfully (a short answer is fine when the query is short).\n"
    "3-6: it answers part of the query, vaguely, or with mistakes.\n"
    "0-2: it does not answer: only a title or heading, only the query or the instruction repeated, "
    "only an acknowledgement such as 'Sure!', or off-topic.\n"
    'Reply with JSON: {"score": an integer 0-9}.'
)


def quality_prompt(instruction: str, query: str, response: str) -> Messages:
    return [
        {"role": "system", "content": QUALITY_TASK},
        {"role": "user", "content": f"[Query] {query}\n[Instruction] {instruction}\n[Response] {response}"},
    ]
