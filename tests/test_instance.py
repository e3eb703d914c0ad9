"""The Dagster instances we ship: the production one (deploy/dagster.yaml) on a real
PostgreSQL (pgserver's binaries, started for the test), with the real daemon draining its run
queue; and the embedded default's (SQLite)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from autoif_dagster import instance as shipped, pools

from .servers import stop_group

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CODE = ["-m", "tests.pool_defs", "-d", str(ROOT)]


@pytest.fixture
def postgres_url(postgres_database):
    """A database of the test's own: pool limits live in the database, and one test setting a
    limit of 0 must not stall the next one's runs (it did, in random order)."""
    return postgres_database.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture
def production(tmp_path, postgres_url, monkeypatch):
    """DAGSTER_HOME holding the production dagster.yaml, pointed at the test's own PostgreSQL database."""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("AUTOIF_POSTGRES_URL", postgres_url)
    monkeypatch.setenv("POOL_TEST_LOG", str(tmp_path / "ran.jsonl"))
    monkeypatch.setenv("POOL_TEST_SECONDS", "10")  # longer than a run's start: unqueued, they would overlap
    return tmp_path


def _wait_for(instance: dg.DagsterInstance, run_ids: list[str], timeout_s: float) -> list[dg.DagsterRun]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        runs = [instance.get_run_by_id(r) for r in run_ids]
        if all(r.is_finished for r in runs):
            return runs
        time.sleep(1)
    pytest.fail(f"runs not finished in {timeout_s:.0f} s: {[r.status for r in runs]}")


def test_production_instance_queues_a_second_gpu_run_until_the_first_ends(production):
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert shipped.prepare(instance) == []
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", *CODE], cwd=ROOT, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            before = {r.run_id for r in instance.get_runs()}
            launches = [subprocess.Popen([str(BIN / "dagster"), "job", "launch", *CODE, "-j", "gpu_job"], cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        for _ in range(2)]  # two at once, as from the UI or a tick while a run is going
            assert [launch.wait(120) for launch in launches] == [0, 0]
            run_ids = [r.run_id for r in instance.get_runs() if r.run_id not in before]
            assert len(run_ids) == 2
            runs = _wait_for(instance, run_ids, 240)
        finally:
            stop_group(daemon)  # and the code server it started
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
    first, second = sorted((json.loads(line) for line in (production / "ran.jsonl").read_text().splitlines()),
                           key=lambda r: r["start"])
    assert second["start"] >= first["end"]  # the pool's one slot: never both on the GPU


def test_a_pool_that_admits_no_run_is_named(production):
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots(pools.GPU, 0)
        assert shipped.problems(instance) == [
            "pool 'gpu' has limit 0 on this instance: no run that loads a model can start "
            "(dagster instance concurrency set gpu 1)"
        ]


def test_the_embedded_instance_is_written_once_and_kept(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    shipped.ensure_local(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert instance.get_concurrency_config().pool_config.pool_granularity.value == "run"
        assert shipped.problems(instance) == []
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # the user's own
    shipped.ensure_local(home)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
    with dg.DagsterInstance.get() as instance:  # op granularity: an engine would outlive its slot
        assert shipped.problems(instance) == [
            "concurrency.pools.granularity is 'op' on this instance: a run's engine outlives the step "
            "that holds its pool slot, so two runs can load models at once; set it to 'run' "
            "(deploy/dagster.yaml)"
        ]
