"""The transformers NLI backend on a tiny randomly initialised classifier built here (the
paper's mDeBERTa weights are not downloadable on this machine); the labels are whatever the
random weights say, so the test checks the plumbing: label mapping, batching, errors."""

import pytest

from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.nli import NLIResource, map_label


def _tiny_classifier(path, labels):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "use", "no", "commas", "answer", "in", "capitals", "write"]
    (path / "vocab.txt").write_text("\n".join(words))
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={label: i for i, label in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(path)
    return str(path)


def test_label_names_of_common_nli_models_map_to_ours():
    assert [map_label(n) for n in ["ENTAILMENT", "neutral", "Contradiction", "LABEL_0"]] == [
        "entailment", "neutral", "contradiction", None]


def test_transformers_backend_judges_every_pair(tmp_path):
    model = _tiny_classifier(tmp_path, ["entailment", "neutral", "contradiction"])
    nli = NLIResource(backend="transformers", model=model, batch_size=2)
    pairs = [("Use no commas", "Write no commas")] * 3 + [("Answer in capitals", "Use capitals")] * 2
    judged, stats = nli.judge(pairs, LLMResource())
    assert stats == {}  # no LLM asked
    assert len(judged) == 5
    assert all(label in {"entailment", "neutral", "contradiction"} and reason is None for label, reason in judged)
    assert judged[0] == judged[1] == judged[2]  # same input, same verdict, across batches
    assert nli.describe(LLMResource()) == {"nli_backend": "transformers", "nli_model": model}


def test_a_classifier_without_a_contradiction_label_is_refused(tmp_path):
    model = _tiny_classifier(tmp_path, ["positive", "negative"])
    nli = NLIResource(backend="transformers", model=model)
    with pytest.raises(ValueError, match="no contradiction label"):
        nli.judge([("a", "b")], LLMResource())


def test_embedding_backend_tells_rewordings_from_other_requirements():
    """The offline default judge on real pairs from a run: back-translations that reword the
    instruction are kept, ones that ask for something unrelated are contradictions."""
    nli = NLIResource()
    judged, _ = nli.judge([
        ("Do not include the words 'very' or 'really'", "Do not use the words 'very' or 'really' anywhere"),
        ("End your answer with the exact phrase 'Is there anything else?'", 'End with the phrase "Is there anything else?'),
        ("Include the keyword 'python' at least twice", "End the response with an exclamation mark"),
        ("Answer in exactly three sentences", "Include a markdown table"),
    ], LLMResource())
    assert [label for label, _ in judged] == ["entailment", "entailment", "contradiction", "contradiction"]
    assert nli.describe(LLMResource()) == {"nli_backend": "embedding", "nli_model": "all-MiniLM-L6-v2"}


def test_similarity_thresholds_map_to_labels():
    nli = NLIResource(contradiction_below=0.3, entailment_from=0.7)
    assert [nli.label_similarity(s) for s in (0.1, 0.3, 0.69, 0.7)] == ["contradiction", "neutral", "neutral", "entailment"]
