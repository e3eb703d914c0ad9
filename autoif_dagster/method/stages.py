"""The method's LLM stages, each declared once: its prompt, its output format, its parser.

An asset says which rows go in and what a parsed value becomes; `run_stage`
(assets/llm_stage.py) does the rest the same way for every stage. A stage's `version` is a
fingerprint of what defines it (the prompt as rendered on fixed probe arguments, so the
module constants it uses count too; the output schema; the parser's source), which the
assets' code versions are built from: a prompt edit makes exactly the assets downstream of
it stale.
"""

import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import parsing, prompts

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Stage:
    name: str
    prompt: Callable[..., Messages]
    probe: tuple  # arguments the prompt is rendered on for the version fingerprint
    parse: Callable[[str], Any]  # raises parsing.ParseError(reason): the drop reason
    schema: Callable[..., dict] | None = None  # JSON schema (structured output) from schema_args
    schema_probe: tuple = ()
    keep_truncated: bool = False  # parse output cut at max_tokens instead of dropping it
    top_logprobs: int = 0  # alternatives per generated token the asset reads (0: text only)

    @property
    def version(self) -> str:
        rendered = {"prompt": self.prompt(*self.probe),
                    "schema": self.schema(*self.schema_probe) if self.schema else None}
        parts = [self.name, json.dumps(rendered, sort_keys=True), inspect.getsource(self.parse), str(self.top_logprobs)]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


AUGMENT = Stage(
    "augment", prompts.augment_prompt, (["Answer in lowercase.", "Use no commas."], 3), parsing.split_lines,
    keep_truncated=True,  # every whole line of a cut-off list is still an instruction
)
VERIFIER = Stage("verifier", prompts.verifier_prompt, ("Answer in lowercase.",), parsing.parse_verifier,
                 schema=prompts.verifier_schema, schema_probe=(4,))
BACK_TRANSLATION = Stage("back_translation", prompts.back_translation_prompt,
                         ("def evaluate(response):\n    return response.islower()",), parsing.parse_back_translation)
# The consistency judge's two questions: the answer's probability of "yes" is what it reads
SAME_REQUIREMENT = Stage("same_requirement", prompts.same_requirement_prompt,
                         ("Answer in lowercase.", "Write only lowercase letters."), parsing.parse_yes_no, top_logprobs=20)
CHECKS_INSTRUCTION = Stage("checks_instruction", prompts.checks_instruction_prompt,
                           ("Answer in lowercase.", "def evaluate(response):\n    return response.islower()"),
                           parsing.parse_yes_no, top_logprobs=20)
RESPONSE = Stage("response", prompts.response_prompt, ("Name a fruit.\n\nAnswer in lowercase.",),
                 parsing.parse_response)
QUALITY = Stage("quality", prompts.quality_prompt, ("Answer in lowercase.", "Name a fruit.", "an apple"),
                parsing.parse_score, schema=lambda: prompts.SCORE_SCHEMA,
                top_logprobs=20)  # every score digit among them (20: the most OpenAI-style servers give)
