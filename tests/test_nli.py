"""The consistency judge. The default (the supervisor's probability of "yes" to two questions)
on the labelled pairs of real rounds with the default supervisor; the embedding backend on real
pairs; the transformers backend on a tiny randomly initialised classifier built here (the
paper's mDeBERTa weights are not downloadable on this machine), whose labels are whatever the
random weights say, so that test checks the plumbing: label mapping, batching, errors."""

import json
from pathlib import Path

import pytest

from autoif_dagster.method.audit import agreement, ranking_auc
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.models import DEFAULT_SUPERVISOR
from autoif_dagster.resources.nli import NLIResource, map_label

LABELLED = Path(__file__).parent / "fixtures" / "consistency_pairs.jsonl"


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
    pairs = [("Use no commas", "Write no commas", "")] * 3 + [("Answer in capitals", "Use capitals", "")] * 2
    judged, stats = nli.judge(pairs, LLMResource())
    assert stats == {}  # no LLM asked
    assert len(judged) == 5
    assert all(label in {"entailment", "neutral", "contradiction"} and reason is None for label, _, reason in judged)
    assert judged[0] == judged[1] == judged[2]  # same input, same verdict, across batches
    assert nli.describe(LLMResource()) == {"nli_backend": "transformers", "nli_model": model}


def test_a_classifier_without_a_contradiction_label_is_refused(tmp_path):
    model = _tiny_classifier(tmp_path, ["positive", "negative"])
    nli = NLIResource(backend="transformers", model=model)
    with pytest.raises(ValueError, match="no contradiction label"):
        nli.judge([("a", "b", "")], LLMResource())


def test_embedding_backend_tells_rewordings_from_other_requirements():
    """On real pairs from a run: back-translations that reword the instruction are kept, ones
    that ask for something unrelated are contradictions."""
    nli = NLIResource(backend="embedding")
    judged, _ = nli.judge([
        ("Do not include the words 'very' or 'really'", "Do not use the words 'very' or 'really' anywhere", ""),
        ("End your answer with the exact phrase 'Is there anything else?'", 'End with the phrase "Is there anything else?', ""),
        ("Include the keyword 'python' at least twice", "End the response with an exclamation mark", ""),
        ("Answer in exactly three sentences", "Include a markdown table", ""),
    ], LLMResource())
    assert [label for label, _, _ in judged] == ["entailment", "entailment", "contradiction", "contradiction"]
    assert all(-1 <= score <= 1 for _, score, _ in judged)  # the cosine similarity it labelled by
    assert nli.describe(LLMResource()) == {"nli_backend": "embedding", "nli_model": "all-MiniLM-L6-v2"}


@pytest.mark.engine
def test_the_default_judge_separates_the_labelled_pairs_of_real_rounds():
    """40 (instruction, back-translation, function) triples from real rounds, each labelled by
    reading: does the function check what the instruction says? The default judge with the
    default supervisor must rank them (AUC) and label them at its threshold (balanced accuracy)
    about as measured when it was chosen (0.94 and 0.93, bf16 on an AMD EPYC Zen 4); the
    embedding judge it replaced reaches neither."""
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines()]
    assert len(rows) >= 40 and {r["same"] for r in rows} == {True, False}
    triples = [(r["instruction"], r["back_translation"], r["func"]) for r in rows]
    same = [r["same"] for r in rows]
    supervisor = LLMResource(model=DEFAULT_SUPERVISOR)
    judged, stats = NLIResource().judge(triples, supervisor)
    assert stats["llm_requests"] == 2 * len(rows) and all(reason is None for _, _, reason in judged)
    scores = [score for _, score, _ in judged]
    labels = [label == "entailment" for label, _, _ in judged]
    agreed = agreement(labels, same)
    assert ranking_auc(scores, same) >= 0.85 and agreed.balanced_accuracy >= 0.8, (ranking_auc(scores, same), agreed)
    embedded, _ = NLIResource(backend="embedding").judge(triples, supervisor)
    caught = sum(label == "contradiction" for (label, _, _), y in zip(embedded, same) if not y)
    assert caught < agreed.true_negative  # the judge before it let most wrong functions through


def test_similarity_thresholds_map_to_labels():
    nli = NLIResource(contradiction_below=0.3, entailment_from=0.7)
    assert [nli.label_similarity(s) for s in (0.1, 0.3, 0.69, 0.7)] == ["contradiction", "neutral", "neutral", "entailment"]
