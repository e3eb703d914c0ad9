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
    metadata = {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in (ev.event_specific_data for ev in result.get_asset_materialization_events())
    }
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
