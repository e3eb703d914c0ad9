"""The shipped Ray deployment (deploy/dagster-ray.yaml): a run launched on that instance (real
PostgreSQL, the real daemon) executes as a Ray job on a real local Ray head, and succeeds."""

import json
import os
import subprocess

import dagster as dg
import pytest

from .servers import free_port, stop_group
from .test_instance import BIN, CODE, ROOT, _wait_for


@pytest.fixture
def ray_head():
    """A Ray head with its job API (the dashboard), on a port of the test's own."""
    from ray.cluster_utils import Cluster

    port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port})
    yield f"http://127.0.0.1:{port}"
    cluster.shutdown()


def test_a_run_launched_on_the_ray_instance_runs_as_a_ray_job(tmp_path, postgres_database, ray_head, monkeypatch):
    from ray.job_submission import JobSubmissionClient

    home = tmp_path / "dagster"
    home.mkdir()
    shipped = (ROOT / "deploy" / "dagster-ray.yaml").read_text()
    assert "address: http://ray-head.internal:8265" in shipped
    (home / "dagster.yaml").write_text(
        shipped.replace("http://ray-head.internal:8265", ray_head)
        .replace("env_vars: [", "env_vars: [POOL_TEST_LOG, POOL_TEST_SECONDS, "))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")  # as in an activated environment
    monkeypatch.setenv("AUTOIF_POSTGRES_URL", postgres_database.replace("postgresql://", "postgresql+psycopg2://", 1))
    monkeypatch.setenv("POOL_TEST_LOG", str(tmp_path / "ran.jsonl"))
    monkeypatch.setenv("POOL_TEST_SECONDS", "1")
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_launcher).__name__ == "RayRunLauncher"
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", *CODE], cwd=ROOT, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            launch = subprocess.run([str(BIN / "dagster"), "job", "launch", *CODE, "-j", "gpu_job"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=180)
            assert launch.returncode == 0, launch.stderr[-2000:]
            (run_id,) = [r.run_id for r in instance.get_runs()]
            (run,) = _wait_for(instance, [run_id], 300)
        finally:
            stop_group(daemon)
        jobs = [j for j in JobSubmissionClient(ray_head).list_jobs() if (j.metadata or {}).get("dagster/run-id") == run_id]
        assert run.status == dg.DagsterRunStatus.SUCCESS, [j.message for j in jobs]
    assert len(jobs) == 1 and jobs[0].status == "SUCCEEDED"
    (ran,) = [json.loads(line) for line in (tmp_path / "ran.jsonl").read_text().splitlines()]
    assert ran["run"] == run_id  # the asset ran, in the Ray job
