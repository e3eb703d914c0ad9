"""`autoif run` on bad input: a clear error naming the problem, a non-zero exit, and no
artifact downstream of the failure written."""

import argparse

import pytest

from autoif_dagster import cli
from autoif_dagster.home import Home
from autoif_dagster.resources.io_manager import read_artifact
from tests.lineage import chain
from tests.rounds import ROUND


def test_bad_seed_file_fails_the_run_with_its_reason(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    seeds = tmp_path / "seeds.txt"
    seeds.write_bytes("Écris en minuscules\n".encode("latin-1"))
    code = cli.main(["run", "--home", str(tmp_path / "home"), "--seeds", str(seeds)])
    err = capsys.readouterr().err
    assert code == 1
    assert "step seed_instructions failed" in err and "is not UTF-8" in err and str(seeds) in err
    assets = tmp_path / "home" / "assets"
    written = {p.name.removesuffix(".parquet") for p in assets.iterdir() if not p.name.startswith(".")}
    assert written <= {"queries"}  # the independent branch may finish; nothing after the seeds
    assert not list(assets.rglob(".*.tmp"))


@pytest.mark.parametrize("spec, message", [
    ("tomorrow", "unknown round 'tomorrow': rounds are days, YYYY-MM-DD, from 2026-11-01"),
    ("2026-10-31", "the first round is 2026-11-01"),
    ("2999-01-01", "round '2999-01-01' is in the future"),
    ("2026-11-03:2026-11-02", "run backwards"),
])
def test_an_unknown_round_is_refused_before_anything_runs(tmp_path, capsys, spec, message):
    assert cli.main(["run", "--home", str(tmp_path / "home"), "--round", spec]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "home" / "assets").exists()


def test_train_before_any_data_names_what_to_materialize_first(tmp_path, monkeypatch, capsys):
    """`autoif train` with no data in its home: the job's config is accepted (every resource it
    sets exists), no checkpoint is written, and the error says which data is missing."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    prompts = tmp_path / "ifeval.jsonl"
    prompts.write_text('{"key": 1, "prompt": "Say hi in lowercase.", "instruction_id_list": '
                       '["change_case:english_lowercase"], "kwargs": [{}]}\n')
    home = tmp_path / "home"
    code = cli.main(["train", "--home", str(home), "--ifeval", str(prompts), "--ifbench-prompts", "0",
                     "--llm-backend", "replay", "--sandbox", "local"])
    err = capsys.readouterr().err
    assert code == 1
    assert "has not been materialized" in err or "replay: the ledger" in err, err
    checkpoints = home / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())


def test_funnel_printout(capsys):
    rows = [{"asset": "verifiers", "in": 41, "out": 12, "dropped": {"compile_error": 15, "below_accuracy": 4}}]
    cli.print_funnel(rows)
    out = capsys.readouterr().out
    assert "verifiers" in out and "compile_error: 15, below_accuracy: 4" in out


def test_ray_flags_reach_both_llm_roles_and_the_sandbox_and_unset_backends_stay_the_resources(tmp_path):
    args = cli.build_parser().parse_args(["run", "--llm-backend", "ray", "--sandbox", "ray", "--ray-address",
                                          "ray://head:10001", "--replicas", "3"])
    rc = cli._run_config(args, Home(tmp_path))["resources"]
    for role in ("supervisor_llm", "policy_llm"):
        assert {k: rc[role]["config"][k] for k in ("backend", "ray_address", "replicas")} == \
            {"backend": "ray", "ray_address": "ray://head:10001", "replicas": 3}
    assert rc["sandbox"]["config"]["backend"] == "ray" and rc["sandbox"]["config"]["ray_address"] == "ray://head:10001"
    plain = cli._run_config(cli.build_parser().parse_args(["run"]), Home(tmp_path))["resources"]
    assert "backend" not in plain["sandbox"]["config"] and "backend" not in plain["supervisor_llm"]["config"]


def test_config_file_overrides_the_profile_section_by_section(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("responses: {samples_per_prompt: 8}\ncrossval: {min_functions: 3}\n")
    args = argparse.Namespace(
        profile="demo", config=str(cfg), seeds=None, queries=None, llm_backend="vllm", supervisor_model=None,
        policy_model=None, base_url=None, sandbox="host", ray_address=None, replicas=None, verbose=False)
    rc = cli._run_config(args, Home(tmp_path))["resources"]
    method = rc["autoif"]["config"]
    assert method["responses"]["samples_per_prompt"] == 8
    assert method["responses"]["pass_rate_above"] == 0.5  # the rest of the section stays
    assert method["crossval"]["min_functions"] == 3 and method["crossval"]["min_cases"] == 2
    ledger = str(tmp_path / "ledger.sqlite")  # one ledger for the LLM roles and the sandbox
    assert rc["sandbox"]["config"] == {"backend": "host", "ledger_path": ledger}
    assert rc["supervisor_llm"]["config"]["ledger_path"] == rc["policy_llm"]["config"]["ledger_path"] == ledger
    assert rc["io_manager"]["config"]["base_dir"] == str(tmp_path / "assets")


def test_unreadable_config_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SystemExit, match="bad.yaml must hold a mapping"):
        cli._load_yaml(str(bad))


@pytest.mark.parametrize("supervisor, policy, expected", [
    (None, None, ("qwen2.5-coder-1.5b-instruct",) * 2),  # the default: self-alignment, one model in both roles
    (None, "small/model", ("qwen2.5-coder-1.5b-instruct", "small/model")),  # strong-to-weak: only when asked
    ("big/model", None, ("big/model", "big/model")),  # self-alignment: one model answers too
    ("big/model", "small/model", ("big/model", "small/model")),
])
def test_model_flags_set_both_llm_roles(tmp_path, supervisor, policy, expected):
    args = argparse.Namespace(
        profile="demo", config=None, seeds=None, queries=None, llm_backend="openai", supervisor_model=supervisor,
        policy_model=policy, base_url="http://h:1/v1", sandbox="docker", ray_address=None, replicas=None, verbose=False)
    rc = cli._run_config(args, Home(tmp_path))["resources"]
    got = tuple(rc[role]["config"].get("model") for role in ("supervisor_llm", "policy_llm"))
    assert got == expected
    assert rc["policy_llm"]["config"]["base_url"] == rc["supervisor_llm"]["config"]["base_url"] == "http://h:1/v1"


@pytest.mark.engine
def test_run_then_nothing_stale_then_trace(tmp_path, monkeypatch, capsys, sandbox):
    """The README's path on the default run, its completions replayed from the recording:
    `autoif run` succeeds with every asset check passing; `autoif run --stale` right after
    finds nothing to do (and starts no engine); `autoif trace` names the run and code version
    that made each row of an SFT sample's chain."""
    import json
    from pathlib import Path

    from autoif_dagster.definitions import all_assets
    from autoif_dagster.resources import vllm_engine
    from autoif_dagster.resources.ledger import Ledger

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("AUTOIF_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    with Ledger(str(home / "ledger.sqlite")) as ledger:
        ledger.import_completions(Path(__file__).parent / "fixtures" / "default_run.jsonl.gz")
    monkeypatch.setattr(vllm_engine.VLLMGenerator, "build_engine", lambda self: pytest.fail("an engine was started"))
    args = ["run", "--home", str(home), "--llm-backend", "replay", "--sandbox", sandbox.backend, "--round", ROUND]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert "succeeded" in first
    run_id = first.split("\nrun ")[1].split(":")[0]

    assert cli.main([*args, "--stale"]) == 0
    assert "nothing is stale" in capsys.readouterr().out

    sample = read_artifact(home / "assets", "sft_dataset")["sample_id"][0]
    assert cli.main(["trace", sample, "--home", str(home), "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)
    versions = {k.to_user_string(): v for a in all_assets for k, v in a.code_versions_by_key.items()}
    nodes = chain(tree)
    assert {"sft_dataset", "responses", "augmented_instructions"} <= {n["asset"] for n in nodes}
    for node in nodes:
        assert node["run_id"] == run_id and node["code_version"] == versions[node["asset"]], node["asset"]


def test_a_run_prints_a_line_per_stage_and_no_warning(tmp_path, sandbox):
    """What a terminal shows of `autoif run` (the default run, replayed): a start and an end line
    per stage, the funnel and where things are, within ~60 lines besides progress bars, and no
    warning (Dagster's events stay in the instance; `--verbose` prints them)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from autoif_dagster.definitions import all_assets
    from autoif_dagster.resources.ledger import Ledger

    home = tmp_path / "home"
    home.mkdir()
    with Ledger(str(home / "ledger.sqlite")) as ledger:
        ledger.import_completions(Path(__file__).parent / "fixtures" / "default_run.jsonl.gz")
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOIF_HOME", "DAGSTER_HOME")}
    args = ["run", "--home", str(home), "--llm-backend", "replay", "--sandbox", sandbox.backend, "--round", ROUND]
    done = subprocess.run([sys.executable, "-m", "autoif_dagster.cli", *args], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # a progress bar redraws itself with carriage returns (tqdm: "NN%|"); the rest is what a person reads
    lines = [line for line in (done.stdout + done.stderr).split("\n")
             if line.strip() and "\r" not in line and not re.search(r"\d+%\|", line)]
    assert len(lines) <= 60, "\n".join(lines)
    assert not [line for line in lines if "warn" in line.lower()], "\n".join(lines)
    for stage in {a.node_def.name for a in all_assets}:
        assert f"  {stage} ..." in lines and any(line.startswith(f"  {stage} done (") for line in lines), stage
    assert any(line.startswith("sft_dataset ") for line in lines)  # the funnel
    assert any("succeeded; artifacts in" in line for line in lines)


def test_the_terminal_gets_stage_lines_unless_verbose():
    from autoif_dagster.terminal import loggers_config

    quiet = loggers_config(verbose=False)["stage_lines"]["config"]["stages"]
    assert {"verifier_candidates", "cross_validation", "sft_dataset", "sft_checkpoint"} <= set(quiet)
    assert not [stage for stage in quiet if stage.endswith("schema_and_ids")]  # checks print only when they fail
    assert loggers_config(verbose=True) == {"console": {"config": {"log_level": "DEBUG"}}}
