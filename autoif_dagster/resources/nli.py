"""The consistency judge: does a back-translated instruction contradict the original?

`backend="transformers"` runs an NLI sequence classifier (the paper: mDeBERTa-v3-base-xnli);
`backend="llm"`, the offline default, asks the supervision LLM (passed to `judge`, so it is
always the run's supervisor) for a label under a JSON schema.
"""

from collections.abc import Sequence
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from ..method import prompts
from ..method.parsing import ParseError, parse_nli_label
from .llm import ChatRequest, LLMResource

Judgement = tuple[str | None, str | None]  # (label, drop reason)


def map_label(name: str) -> str | None:
    """A classifier's label name (ENTAILMENT, contradiction, LABEL_2...) -> ours, if it is one."""
    lowered = name.lower()
    for ours, stem in (("entailment", "entail"), ("neutral", "neutral"), ("contradiction", "contradict")):
        if stem in lowered:
            return ours
    return None


class NLIResource(dg.ConfigurableResource):
    backend: Literal["llm", "transformers"] = "llm"
    model: str = Field(
        "MoritzLaurer/mDeBERTa-v3-base-xnli-multilingual-nli-2mil7",
        description="NLI classifier for the transformers backend (HF id or local path).",
    )
    batch_size: int = Field(16, ge=1)
    max_tokens: int = Field(24, ge=4, description="LLM backend: tokens for the JSON label.")

    def describe(self, llm: LLMResource) -> dict[str, str]:
        name = self.model if self.backend == "transformers" else llm.model
        return {"nli_backend": self.backend, "nli_model": name}

    def judge(
        self, pairs: Sequence[tuple[str, str]], llm: LLMResource, seed: int = 0, log: Any = None
    ) -> list[Judgement]:
        """(premise, hypothesis) pairs -> (label, None) or (None, reason it could not be judged)."""
        if not pairs:
            return []
        if self.backend == "llm":
            return self._judge_llm(pairs, llm, seed, log)
        return self._judge_transformers(pairs)

    def _judge_llm(self, pairs: Sequence[tuple[str, str]], llm: LLMResource, seed: int, log: Any) -> list[Judgement]:
        requests = [
            ChatRequest(prompts.nli_prompt(p, h), max_tokens=self.max_tokens, temperature=0.0,
                        seed=seed, json_schema=prompts.NLI_SCHEMA)
            for p, h in pairs
        ]
        out: list[Judgement] = []
        for completion in llm.chat(requests, log=log):
            try:
                out.append((parse_nli_label(completion.text), None))
            except ParseError as exc:
                out.append((None, exc.reason))
        return out

    def _judge_transformers(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.model)
        model = AutoModelForSequenceClassification.from_pretrained(self.model).eval()
        labels = {i: map_label(str(n)) for i, n in model.config.id2label.items()}
        if "contradiction" not in labels.values():
            raise ValueError(
                f"NLI model {self.model!r} has no contradiction label: {model.config.id2label}"
            )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        out: list[Judgement] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            enc = tokenizer([p for p, _ in batch], [h for _, h in batch], truncation=True,
                            padding=True, return_tensors="pt").to(device)
            with torch.no_grad():
                best = model(**enc).logits.argmax(-1).tolist()
            out += [(labels[i], None) if labels[i] else (None, "unmapped_label") for i in best]
        return out
