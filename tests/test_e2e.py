"""The whole graph materialized with the real embedded model (vLLM), the local sandbox and
the LLM-as-NLI judge, at the tiny scale. The model is weak, so the assertions are about what
must hold whatever it writes: every asset is materialized with its declared schema, every
row's parent ids resolve, and every stage's funnel adds up."""

import dagster as dg
import polars as pl
import pytest

from autoif_dagster.definitions import all_assets
from autoif_dagster.schemas import SCHEMAS

# stages whose output rows and dropped rows together account for every input row
RECONCILED = ["augmented_instructions", "verifier_candidates", "verifiers", "test_cases", "back_translations",
              "nli_verdicts", "consistent_instructions", "queries", "responses", "response_verdicts",
              "quality_scores", "sft_dataset"]

# (child asset, column) -> (parent asset, column): the lineage every row must satisfy
LINEAGE = [
    ("verifier_candidates", "instruction_id", "augmented_instructions", "instruction_id"),
    ("verifiers", "instruction_id", "augmented_instructions", "instruction_id"),
    ("test_cases", "instruction_id", "augmented_instructions", "instruction_id"),
    ("back_translations", "verifier_id", "verifiers", "verifier_id"),
    ("nli_verdicts", "back_translation_id", "back_translations", "back_translation_id"),
    ("consistent_instructions", "instruction_id", "verifiers", "instruction_id"),
    ("instruction_prompts", "instruction_id", "consistent_instructions", "instruction_id"),
    ("instruction_prompts", "query_id", "queries", "query_id"),
    ("responses", "prompt_id", "instruction_prompts", "prompt_id"),
    ("response_verdicts", "response_id", "responses", "response_id"),
    ("quality_scores", "response_id", "responses", "response_id"),
    ("sft_dataset", "response_id", "responses", "response_id"),
    ("sft_dataset", "query_id", "queries", "query_id"),
    ("dpo_pairs", "chosen_response_id", "responses", "response_id"),
    ("dpo_pairs", "rejected_response_id", "responses", "response_id"),
]


@pytest.fixture
def run(resources, tmp_path):
    result = dg.materialize(all_assets, resources=resources)
    assert result.success
    frames = {name: pl.read_parquet(tmp_path / "assets" / f"{name}.parquet") for name in SCHEMAS}
    materializations = [ev.event_specific_data.materialization for ev in result.get_asset_materialization_events()]
    metadata = {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()} for m in materializations}
    return frames, metadata


@pytest.mark.engine
def test_whole_graph_on_the_embedded_model(run):
    frames, metadata = run
    assert set(metadata) == set(SCHEMAS)
    for name, df in frames.items():
        assert df.schema == SCHEMAS[name], name
        assert metadata[name]["rows_out"] == df.height
    for name in RECONCILED:
        m = metadata[name]
        assert m["rows_in"] == m["rows_out"] + m["dropped_total"], (name, m)
    for child, col, parent, pcol in LINEAGE:
        missing = set(frames[child][col].to_list()) - set(frames[parent][pcol].to_list())
        assert not missing, f"{child}.{col} ids not in {parent}: {missing}"
    # the LLM stages really generated: tokens were counted by the engine
    assert metadata["verifier_candidates"]["llm_generated_tokens"] > 0
    assert metadata["verifier_candidates"]["rows_in"] == metadata["augmented_instructions"]["rows_out"] * 3
    assert metadata["queries"]["rows_out"] == 6


@pytest.mark.engine
def test_quality_scores_with_the_real_model(llm, tiny_config):
    """The embedded model rarely writes responses that pass its own verifiers, so the scoring
    stage is exercised here on responses that passed by construction."""
    from autoif_dagster.assets.responses import quality_scores
    from autoif_dagster.schemas import frame

    prompts = frame("instruction_prompts", [
        {"prompt_id": "p1", "instruction_id": "i1", "query_id": "q1", "instruction": "Do not use any commas",
         "query": "How do I make tea?", "prompt": "How do I make tea?\n\nFollow this instruction strictly in your answer: Do not use any commas"}])
    texts = ["Boil water then pour it over the tea leaves and wait three minutes.", "Tea is nice.", "I like trains"]
    responses = frame("responses", [{"response_id": f"r{i}", "prompt_id": "p1", "sample_index": i, "model": "m",
                                     "response": t, "finish_reason": "stop"} for i, t in enumerate(texts)])
    verdicts = frame("response_verdicts", [{"response_id": f"r{i}", "prompt_id": "p1", "n_verifiers": 1, "n_passed": 1,
                                            "n_errors": 0, "pass_rate": 1.0} for i in range(3)])
    out = quality_scores(dg.build_asset_context(), tiny_config, llm, responses, verdicts, prompts)
    scores = out.value
    assert scores.height + out.metadata["dropped_total"].value == 3
    assert scores.height >= 2  # structured output: the JSON parses
    assert scores["score"].is_between(0, 10).all()
    assert out.metadata["llm_requests"].value == 3
