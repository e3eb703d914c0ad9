"""Rounds (daily partitions): seeds from the key, one round alone or many in one run on one
engine, the combined datasets holding every round once, and the nightly schedule."""

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from autoif_dagster.assets.datasets import sft_dataset
from autoif_dagster.config import AutoIFConfig
from autoif_dagster.definitions import all_assets, defs
from autoif_dagster.resources import vllm_engine
from autoif_dagster.resources.io_manager import read_artifact
from autoif_dagster.rounds import FIRST_ROUND, ROUNDS, resolve_rounds, round_index, round_seed
from tests.rounds import frame
from tests.servers import stop_group

NEXT = "2026-11-02"
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_a_rounds_seeds_derive_from_its_key():
    assert round_seed(0, FIRST_ROUND) == 0  # the recorded default run is the first round
    assert round_seed(7, NEXT) == 1007 and round_index("2026-12-01") == 30
    with pytest.raises(ValueError, match="unknown round 'latest'"):
        round_index("latest")


def test_resolve_rounds_defaults_to_today_and_takes_ranges():
    today = ROUNDS.get_last_partition_key()
    assert resolve_rounds(None) == (today, today)
    assert resolve_rounds(f"{FIRST_ROUND}:{NEXT}") == (FIRST_ROUND, NEXT)


def test_the_nightly_schedule_asks_for_the_days_round():
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.timezone.utc))
    nightly = defs.resolve_schedule_def("nightly_regeneration")
    requests = nightly.evaluate_tick(context).run_requests
    assert [(r.partition_key, r.run_key) for r in requests] == [("2026-11-20", "2026-11-20")]
    assert nightly.cron_schedule == "0 2 * * *"
    assert defs.resolve_job_def("autoif").partitions_def == ROUNDS


def _daemon_tick(instance: dg.DagsterInstance, schedule, timeout_s: float = 60):
    """Run the real daemon on the workspace until it has finished a tick of `schedule`; that tick."""
    from dagster._core.scheduler.instigation import TickStatus

    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=ROOT,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            done = [t for t in instance.get_ticks(schedule.instigator_origin_id, schedule.selector_id)
                    if t.status != TickStatus.STARTED]
            if done:
                return done[0]
            time.sleep(1)
        pytest.fail(f"the daemon finished no tick of nightly_regeneration in {timeout_s:.0f} s")
    finally:
        stop_group(daemon)  # and the code server it started


def test_a_nightly_tick_evaluated_again_finds_its_run_and_starts_no_second(tmp_path, monkeypatch):
    """The real daemon on the project's schedule, caught up to today's 02:00 UTC tick, makes
    that round's run; then the instance forgets the tick (a daemon that crashed before it
    recorded it) and a restarted daemon evaluates it again: it finds the run it made and
    starts none. Dagster's scheduler looks the run up by schedule, scheduled execution time
    and run key together (_scheduler/scheduler.py, _get_existing_run_for_request), so this is
    one run per tick, not per run key: a run with the day's key made at another time (or by
    hand) would not count. A day has one run because the cron has one tick a day. Runs stay
    queued (max_concurrent_runs: 0): nothing executes."""
    from dagster._core.scheduler.instigation import InstigatorType, ScheduleInstigatorData, TickStatus
    from dagster._core.storage import tags

    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("run_queue:\n  max_concurrent_runs: 0\ntelemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    now = dt.datetime.now(dt.timezone.utc)
    tick = now.replace(hour=2, minute=0, second=0, microsecond=0) - dt.timedelta(days=now.hour < 2)
    day = tick.date().isoformat()
    subprocess.run([str(BIN / "dagster"), "schedule", "start", "nightly_regeneration", "-w", "workspace.yaml"],
                   cwd=ROOT, check=True, capture_output=True)
    with dg.DagsterInstance.get() as instance:
        (schedule,) = instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
        started = schedule.with_data(ScheduleInstigatorData(schedule.instigator_data.cron_schedule,
                                                            start_timestamp=tick.timestamp() - 60))
        instance.update_instigator_state(started)  # turned on just before the tick: the daemon catches it up

        first = _daemon_tick(instance, schedule)
        assert first.status == TickStatus.SUCCESS, first.error
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.QUEUED and first.run_ids == [run.run_id]

        instance.purge_ticks(schedule.instigator_origin_id, schedule.selector_id, before=time.time())
        assert not instance.get_ticks(schedule.instigator_origin_id, schedule.selector_id)
        instance.update_instigator_state(started)  # and its record of having looked since
        second = _daemon_tick(instance, schedule)  # a new tick for the same 02:00
        assert second.timestamp == first.timestamp == tick.timestamp()
        assert second.status == TickStatus.SUCCESS and second.run_ids == [run.run_id] and second.run_keys == [day]
        assert [r.run_id for r in instance.get_runs()] == [run.run_id]
        # what the daemon looks a tick's run up by: schedule, scheduled time, run key (and the round it asks for)
        expected = {tags.SCHEDULE_NAME_TAG: "nightly_regeneration", tags.SCHEDULED_EXECUTION_TIME_TAG: tick.isoformat(),
                    tags.RUN_KEY_TAG: day, tags.PARTITION_NAME_TAG: day}
        assert {k: run.tags.get(k) for k in expected} == expected


def _round_inputs(round_key: str, answer: str) -> dict:
    prompt = {"prompt_id": "prm-1", "instruction_id": "ins-1", "query_id": "qry-1", "instruction": "No commas",
              "query": "Name a fruit", "prompt": "Name a fruit\n\nFollow this instruction strictly in your answer: No commas"}
    return {
        "instruction_prompts": frame("instruction_prompts", [prompt], round_key),
        "responses": frame("responses", [{"response_id": f"resp-{round_key}", "prompt_id": "prm-1", "sample_index": 0,
                                          "with_instruction": True, "model": "m", "response": answer,
                                          "finish_reason": "stop"}], round_key),
        "response_verdicts": frame("response_verdicts", [{"response_id": f"resp-{round_key}", "prompt_id": "prm-1",
                                                          "n_verifiers": 1, "n_passed": 1, "n_errors": 0,
                                                          "pass_rate": 1.0}], round_key),
        "quality_scores": frame("quality_scores", [{"response_id": f"resp-{round_key}", "prompt_id": "prm-1",
                                                    "score": 9, "raw": "{}"}], round_key),
    }


def test_the_combined_sft_dataset_holds_every_round_once():
    """Three rounds; the third repeats the first's sample word for word: kept once, in the
    first round, and counted."""
    rounds = [_round_inputs(FIRST_ROUND, "An apple"), _round_inputs(NEXT, "A pear"), _round_inputs("2026-11-03", "An apple")]
    inputs = {name: pl.concat([r[name] for r in rounds], how="vertical") for name in rounds[0]}
    instance = dg.DagsterInstance.ephemeral()
    for partition, rows in ((FIRST_ROUND, 5), (NEXT, 3), (FIRST_ROUND, 6)):  # round 1 made again: 6 rows now
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "augmented_instructions", partition=partition, metadata={"rows_by_round": {partition: rows}}))
    out = sft_dataset(dg.build_asset_context(instance=instance), AutoIFConfig(), **inputs)
    assert out.value["round"].to_list() == [FIRST_ROUND, NEXT]
    assert [m[-1]["content"] for m in out.value["messages"].to_list()] == ["An apple", "A pear"]
    assert out.metadata["dropped"].value == {"repeated_across_rounds": 1}
    assert out.metadata["rounds"].value == f"{FIRST_ROUND}, {NEXT}, 2026-11-03"
    assert out.metadata["rows_per_round"].value.startswith("![rows per round](data:image/png;base64,")
    # each round's yield per stage, from the stages' materializations and its own rows
    table = out.metadata["yield_per_stage"].value.splitlines()
    assert table[0].split("|")[1:-1] == [" stage ", f" {FIRST_ROUND} ", f" {NEXT} ", " 2026-11-03 "]
    assert table[2].split("|")[1:-1] == [" augmented_instructions ", " 6 ", " 3 ", "  "]
    assert table[3].split("|")[1:-1] == [" sft_dataset ", " 1 ", " 1 ", " 0 "]
    assert out.metadata["yield_per_stage_plot"].value.startswith("![rows out of each stage, per round](data:image/png")


@pytest.mark.engine
def test_a_two_round_backfill_is_one_run_on_one_engine(resources, tmp_path, monkeypatch):
    """Dagster's single-run backfill policy: both rounds in one run, the engine started at
    most once (the session's is reused), each round's files written, and each round with its
    own seeds, so its own LLM requests. (The first two LLM stages: the rest of the graph
    runs round by round the same way, and the combined datasets are tested above.)"""
    built = []
    original = vllm_engine.VLLMGenerator.build_engine
    monkeypatch.setattr(vllm_engine.VLLMGenerator, "build_engine", lambda self: built.append(1) or original(self))
    stages = ["seed_instructions", "augmented_instructions", "verifier_candidates"]
    result = dg.materialize(all_assets, selection=stages, resources=resources, tags={
        "dagster/asset_partition_range_start": FIRST_ROUND, "dagster/asset_partition_range_end": NEXT})
    assert result.success and len(built) <= 1
    partitions, metadata = {}, {}
    for event in result.get_asset_materialization_events():
        partitions.setdefault(event.asset_key.to_user_string(), set()).add(event.partition)
        metadata[event.asset_key.to_user_string()] = event.materialization.metadata
    assert partitions == {"seed_instructions": {None}, "augmented_instructions": {FIRST_ROUND, NEXT},
                          "verifier_candidates": {FIRST_ROUND, NEXT}}
    # the run's totals over both rounds: one request per instruction and sample, in either round
    instructions = read_artifact(tmp_path / "assets", "augmented_instructions")
    samples = resources["autoif"].verifiers.samples_per_instruction
    assert metadata["verifier_candidates"]["llm_requests"].value == samples * instructions.height
    assert metadata["verifier_candidates"]["rounds"].value == f"{FIRST_ROUND}, {NEXT}"
    for name in stages[1:]:
        assert sorted(p.name for p in (tmp_path / "assets" / name).iterdir()) == [f"{FIRST_ROUND}.parquet", f"{NEXT}.parquet"]
    candidates = read_artifact(tmp_path / "assets", "verifier_candidates")
    by_round = {k: set(g["generation_id"].to_list()) for (k,), g in candidates.group_by("round")}
    assert by_round[FIRST_ROUND] and by_round[NEXT] and not by_round[FIRST_ROUND] & by_round[NEXT]


def test_a_round_whose_upstream_was_never_made_names_it(tmp_path):
    from autoif_dagster.definitions import default_resources
    from autoif_dagster.resources.io_manager import ParquetIOManager

    resources = {**default_resources(), "io_manager": ParquetIOManager(base_dir=str(tmp_path))}
    result = dg.materialize(all_assets, selection=["verifier_candidates"], partition_key=NEXT,
                            resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"augmented_instructions for round {NEXT} has not been materialized" in str(failure.event_specific_data.error)
    assert not (tmp_path / "verifier_candidates").exists()  # nothing half-written
