"""Code versions from what defines an asset, content data versions, and what is stale."""

import subprocess
import sys

import dagster as dg
import polars as pl

from autoif_dagster.definitions import ASSET_MODULES, all_assets
from autoif_dagster.method import prompts
from autoif_dagster.versions import output, stale_assets, to_refresh, with_code_versions


def versions(assets) -> dict[str, str]:
    return {k.to_user_string(): v for a in assets for k, v in a.code_versions_by_key.items()}


def rebuilt() -> dict[str, str]:
    return versions(with_code_versions(dg.load_assets_from_modules(ASSET_MODULES)))


def test_every_asset_has_a_fingerprint_and_it_is_the_same_in_another_process():
    here = versions(all_assets)
    assert all(len(v) == 12 for v in here.values()) and len(set(here.values())) >= len(here) - 1  # verifiers/test_cases share
    script = ("from autoif_dagster.definitions import all_assets\n"
              "print({k.to_user_string(): v for a in all_assets for k, v in a.code_versions_by_key.items()})")
    there = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert eval(there) == here  # no set order or address in a fingerprint


def test_a_prompt_edit_changes_exactly_the_asset_that_sends_it(monkeypatch):
    before = rebuilt()
    monkeypatch.setattr(prompts, "BACK_TRANSLATION_TASK", prompts.BACK_TRANSLATION_TASK + " Be brief.")
    after = rebuilt()
    assert {name for name in before if before[name] != after[name]} == {"back_translations"}


def test_a_config_section_counts_only_for_assets_that_read_it(monkeypatch):
    from autoif_dagster.config import AutoIFConfig, ScoreConfig

    before = rebuilt()
    field = AutoIFConfig.model_fields["scoring"]
    monkeypatch.setattr(field, "default", ScoreConfig(min_score=9))
    after = rebuilt()
    # quality_scores reads scoring.sampling; the datasets filter on scoring.min_score
    assert {name for name in before if before[name] != after[name]} == {"quality_scores", "sft_dataset", "dpo_pairs"}


def test_a_filter_edit_changes_the_assets_that_call_it(monkeypatch):
    from autoif_dagster.assets import responses

    def pass_rate(verdicts):  # an edited filter, as if written in its module
        return 0, 0, 1.0
    pass_rate.__module__ = "autoif_dagster.method.selection"

    before = rebuilt()
    monkeypatch.setattr(responses, "pass_rate", pass_rate)
    after = rebuilt()
    assert {name for name in before if before[name] != after[name]} == {"response_verdicts"}


def test_the_data_version_is_the_content():
    df = pl.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    same = output(df.clone(), {}).data_version
    assert output(df, {}).data_version == same
    assert output(df.with_columns(pl.lit("z").alias("b")), {}).data_version != same
    assert output(df.head(0), {}).data_version != output(pl.DataFrame({"a": []}, schema={"a": pl.Int64}), {}).data_version


@dg.asset
def upstream() -> dg.Output:
    return output(pl.DataFrame({"x": [1, 2, 3]}), {})


@dg.asset
def downstream(upstream: pl.DataFrame) -> dg.Output:
    return output(upstream.head(1), {})


@dg.asset(name="upstream")
def upstream_with_new_rows() -> dg.Output:
    return output(pl.DataFrame({"x": [4, 5]}), {})


@dg.asset
def unrelated() -> dg.Output:
    return output(pl.DataFrame({"y": [0]}), {})


def test_stale_is_what_changed_and_refreshing_it_takes_what_reads_it(tmp_path):
    from autoif_dagster.resources.io_manager import ParquetIOManager

    resources = {"io_manager": ParquetIOManager(base_dir=str(tmp_path))}
    assets = [upstream, downstream, unrelated]
    with dg.instance_for_test() as instance:
        defs = dg.Definitions(assets=assets, resources=resources)
        assert set(stale_assets(instance, defs)) == {a.key for a in assets}  # never materialized
        assert dg.materialize(assets, instance=instance, resources=resources).success
        assert stale_assets(instance, defs) == {}
        edited = [upstream.map_asset_specs(lambda s: s.replace_attributes(code_version="new")), downstream, unrelated]
        defs = dg.Definitions(assets=edited, resources=resources)
        stale = stale_assets(instance, defs)
        assert list(stale) == [upstream.key] and "code version" in stale[upstream.key][0]
        assert to_refresh(stale, defs) == [downstream.key, upstream.key]
        # re-materialized with the same content: what reads it is not stale (exact, not eager)
        assert dg.materialize(edited, instance=instance, resources=resources, selection=["upstream"]).success
        assert stale_assets(instance, defs) == {}
        # new content: now it is
        changed = [upstream_with_new_rows, downstream, unrelated]
        assert dg.materialize(changed, instance=instance, resources=resources, selection=["upstream"]).success
        stale = stale_assets(instance, dg.Definitions(assets=changed, resources=resources))
        assert list(stale) == [downstream.key] and "data version" in stale[downstream.key][0]
