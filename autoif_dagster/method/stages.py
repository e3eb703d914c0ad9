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

    @property
    def version(self) -> str:
        rendered = {"prompt": self.prompt(*self.probe),
                    "schema": self.schema(*self.schema_probe) if self.schema else None}
        parts = [self.name, json.dumps(rendered, sort_keys=True), inspect.getsource(self.parse)]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


AUGMENT = Stage(
    "augment", prompts.augment_prompt, (["Answer in lowercase.", "Use no commas."], 3), parsing.split_lines,
    keep_truncated=True,  # every whole line of a cut-off list is still an instruction
)
VERIFIER = Stage("verifier", prompts.verifier_prompt, ("Answer in lowercase.",), parsing.parse_verifier,
                 schema=prompts.verifier_schema, schema_probe=(4,))
BACK_TRANSLATION = Stage("back_translation", prompts.back_translation_prompt,
                         ("def evaluate(response):\n    return response.islower()",), parsing.parse_back_translation)
NLI = Stage("nli", prompts.nli_prompt, ("Answer in lowercase.", "Write only lowercase letters."),
            parsing.parse_nli_label, schema=lambda: prompts.NLI_SCHEMA)
RESPONSE = Stage("response", prompts.response_prompt, ("Name a fruit.\n\nAnswer in lowercase.",),
                 parsing.parse_response)
QUALITY = Stage("quality", prompts.quality_prompt, ("Answer in lowercase.", "Name a fruit.", "an apple"),
                parsing.parse_score, schema=lambda: prompts.SCORE_SCHEMA)
