"""Code versions from what defines an asset, content data versions, and what is stale."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl

import autoif_dagster
from autoif_dagster.definitions import ASSET_MODULES, all_assets
from autoif_dagster.versions import output, stale_assets, to_refresh, with_code_versions

PACKAGE = Path(autoif_dagster.__file__).parent
# every asset's code version, from the package this process imports
EVERY_VERSION = """
import autoif_dagster
from autoif_dagster.definitions import all_assets, model_assets, training_assets
print(autoif_dagster.__file__)
every = (*all_assets, *training_assets, *model_assets)
print({k.to_user_string(): v for a in every for k, v in a.code_versions_by_key.items()})
"""


def versions(assets) -> dict[str, str]:
    return {k.to_user_string(): v for a in assets for k, v in a.code_versions_by_key.items()}


def rebuilt() -> dict[str, str]:
    return versions(with_code_versions(dg.load_assets_from_modules(ASSET_MODULES)))


def changed_by_edit(tmp_path: Path, file: str, old: str, new: str) -> set[str]:
    """The assets whose code version differs between a copy of the package and a copy with
    `old` replaced by `new` in `file`, a source edit as a developer makes it, each copy loaded
    in a fresh process (what reaches the edited code, through any module, sees it)."""
    procs = {}
    for name, edit in (("unedited", None), ("edited", (old, new))):
        root = tmp_path / name
        shutil.copytree(PACKAGE, root / "autoif_dagster", ignore=shutil.ignore_patterns("__pycache__"))
        if edit:
            source = root / "autoif_dagster" / file
            text = source.read_text()
            assert text.count(old) == 1, f"{old!r} not once in {file}"
            source.write_text(text.replace(old, new))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        procs[name] = root, subprocess.Popen([sys.executable, "-c", EVERY_VERSION], cwd=root, env=env, text=True,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    found = {}
    for name, (root, proc) in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        module, printed = out.splitlines()[-2:]
        assert module == str(root / "autoif_dagster" / "__init__.py")  # the copy, not the installed package
        found[name] = ast.literal_eval(printed)
    before, after = found["unedited"], found["edited"]
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


def test_every_asset_has_a_fingerprint_and_it_is_the_same_in_another_process():
    here = versions(all_assets)
    assert all(len(v) == 12 for v in here.values()) and len(set(here.values())) >= len(here) - 1  # verifiers/test_cases share
    script = ("from autoif_dagster.definitions import all_assets\n"
              "print({k.to_user_string(): v for a in all_assets for k, v in a.code_versions_by_key.items()})")
    there = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert eval(there) == here  # no set order or address in a fingerprint


def test_a_prompt_edit_changes_exactly_the_asset_that_sends_it(tmp_path):
    edited = changed_by_edit(tmp_path, "method/prompts.py", '"the instruction only."',
                             '"the instruction only. Be brief."')
    assert edited == {"back_translations"}


def test_a_config_section_counts_only_for_assets_that_read_it(monkeypatch):
    from autoif_dagster.config import AutoIFConfig, ScoreConfig

    before = rebuilt()
    field = AutoIFConfig.model_fields["scoring"]
    monkeypatch.setattr(field, "default", ScoreConfig(min_score=9))
    after = rebuilt()
    # quality_scores reads scoring.sampling; the datasets filter on scoring.min_score
    assert {name for name in before if before[name] != after[name]} == {"quality_scores", "sft_dataset", "dpo_pairs"}


def test_a_filter_edit_changes_the_assets_that_call_it(tmp_path):
    """`pass_rate` (method/selection.py) edited in its file: every asset that calls it, in any
    module, gets a new code version, and nothing else. Asset checks carry no code version in
    Dagster 1.13 (AssetCheckSpec has no such field; @asset_check passes code_version=None), so
    versions.py fingerprints assets only: the check that calls pass_rate
    (sft_responses_pass_their_verifiers) runs again whenever sft_dataset is materialized,
    which it is once response_verdicts is re-made with new pass rates."""
    edited = changed_by_edit(tmp_path, "method/selection.py", "passed / len(verdicts) if verdicts",
                             "(passed + errors / 2) / len(verdicts) if verdicts")
    # rl_prompts (its trip-wire probes) and grpo_checkpoint (its reward) score with rewards.VerifierReward
    assert edited == {"response_verdicts", "online_dpo_checkpoint", "rl_prompts", "grpo_checkpoint"}


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
