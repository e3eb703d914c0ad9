"""The graph's generation and verification on a real local Ray cluster (a head that runs no work
and two worker nodes, in this machine's processes; each node offers Ray two CPUs, room for an
engine replica and a sandbox worker): the same rows as the
in-process run from the same ledger, a worker node lost mid-stage losing nothing, and a worker
whose sandbox differs from the driver's refused."""

import shutil
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from autoif_dagster.assets.instructions import augmented_instructions, seed_instructions
from autoif_dagster.assets.verifiers import cross_validation, verifier_candidates
from autoif_dagster.resources.io_manager import ParquetIOManager, read_artifact
from autoif_dagster.resources.ledger import Ledger
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.models import SMOKE_MODEL
from autoif_dagster.resources.ray_cluster import RayError
from autoif_dagster.resources.sandbox import SandboxResource, VerifierJob
from autoif_dagster.resources.sandbox_backends import RaySandbox
from autoif_dagster.sandbox.protocol import FAIL, PASS
from tests.rounds import ROUND

NO_LETTER_E = "def evaluate(response):\n    return 'e' not in response\n"


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="autoif", log_to_driver=False)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def on_ray(cluster, **settings) -> SandboxResource:
    return SandboxResource(**{"backend": "ray", "ray_address": cluster[0].address, "ray_node_backend": "local",
                              "workers": 2, "timeout_s": 5.0, **settings})


def test_verdicts_on_ray_are_the_in_process_ones_under_the_same_keys(cluster, tmp_path):
    jobs = [VerifierJob(NO_LETTER_E, [f"text {i}", f"abc {i}"]) for i in range(20)] + [VerifierJob(NO_LETTER_E, [])]
    ledger = str(tmp_path / "ledger.sqlite")
    ray_run = on_ray(cluster, ledger_path=ledger).judge_with_stats(jobs)
    assert [[v.kind for v in row] for row in ray_run.verdicts] == [[FAIL, PASS]] * 20 + [[]]
    assert ray_run.stats["executed"] == 40 and ray_run.stats["stored"] == 40
    # the in-process backend the workers ran finds every verdict under its own keys
    local = SandboxResource(backend="local", timeout_s=5.0, ledger_path=ledger).judge_with_stats(jobs)
    assert local.verdicts == ray_run.verdicts and local.stats["cache_hits"] == 40 and local.stats["executed"] == 0
    assert on_ray(cluster).describe()["isolation"].startswith("on Ray workers, each node: separate process")


def test_a_worker_whose_sandbox_version_differs_is_refused(cluster, monkeypatch):
    monkeypatch.setattr(RaySandbox, "version", lambda self: "local:another-sandbox")
    with pytest.raises(RayError, match="runs sandbox version 'local:.*', this driver 'local:another-sandbox'"):
        on_ray(cluster).judge([VerifierJob(NO_LETTER_E, ["abc"])])


def test_a_worker_node_lost_mid_stage_loses_no_verdict(cluster, tmp_path):
    """A verifier that marks that judging has begun, then takes 0.2 s per input: the test removes
    a worker node as soon as the mark appears, with most of the work still queued."""
    import ray

    mark = tmp_path / "started"
    slow = (f"import time, pathlib\ndef evaluate(response):\n    pathlib.Path({str(mark)!r}).touch()\n"
            "    time.sleep(0.2)\n    return 'e' not in response\n")
    jobs = [VerifierJob(slow, [f"text {i}", f"abc {i}"]) for i in range(24)]
    head, workers = cluster

    def remove_a_worker() -> None:
        while not mark.exists():
            time.sleep(0.05)
        head.remove_node(workers[0], allow_graceful=False)

    remover = threading.Thread(target=remove_a_worker, daemon=True)
    remover.start()
    ledger = str(tmp_path / "ledger.sqlite")
    try:
        result = on_ray(cluster, ledger_path=ledger).judge_with_stats(jobs)
    finally:
        remover.join(60)
        workers[0] = head.add_node(num_cpus=2)  # the next test has two worker nodes again
        head.wait_for_nodes()
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    assert [[v.kind for v in row] for row in result.verdicts] == [[FAIL, PASS]] * 24
    with Ledger(ledger) as stored:
        assert stored.count("verdicts") == 48


@pytest.mark.engine
def test_generation_and_verification_on_ray_give_the_in_process_rows(cluster, tmp_path, tiny_config, sandbox):
    """SmolLM2 as two engine replicas and the sandbox as two workers on the cluster write the
    ledger; the in-process graph replaying that ledger (a fresh home, a copy of the file) then
    makes the same rows: every completion and verdict was stored under the key an in-process
    run asks for."""
    assets = [seed_instructions, augmented_instructions, verifier_candidates, cross_validation]
    names = ["augmented_instructions", "verifier_candidates", "verifiers", "test_cases"]

    def run(home: Path, llm: LLMResource, judge: SandboxResource) -> tuple[dict, dict]:
        resources = {"autoif": tiny_config, "supervisor_llm": llm, "sandbox": judge,
                     "io_manager": ParquetIOManager(base_dir=str(home / "assets"))}
        result = dg.materialize(assets, partition_key=ROUND, resources=resources)
        assert result.success
        metadata = {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
                    for m in (e.event_specific_data.materialization for e in result.get_asset_materialization_events())}
        return {name: read_artifact(home / "assets", name) for name in names}, metadata

    ledger = tmp_path / "ray" / "ledger.sqlite"
    ledger.parent.mkdir()
    on_cluster, ray_meta = run(tmp_path / "ray",
                     LLMResource(model=SMOKE_MODEL, backend="ray", ray_address=cluster[0].address, replicas=2,
                                 ledger_path=str(ledger)),
                     on_ray(cluster, ledger_path=str(ledger), ray_node_backend=sandbox.backend))
    assert on_cluster["verifier_candidates"].height > 0 and ray_meta["verifier_candidates"]["ledger_misses"] > 0
    copy = tmp_path / "here" / "ledger.sqlite"
    copy.parent.mkdir()
    shutil.copy(ledger, copy)
    in_process, meta = run(tmp_path / "here", LLMResource(model=SMOKE_MODEL, backend="replay", ledger_path=str(copy)),
                     SandboxResource(**{**dict(sandbox), "ledger_path": str(copy)}))
    for name in names:
        assert in_process[name].equals(on_cluster[name]), name
    # nothing asked again: every request and every (function, case) pair was a ledger hit
    assert meta["verifier_candidates"]["ledger_misses"] == 0 and meta["augmented_instructions"]["ledger_misses"] == 0
    assert meta["verifiers"]["sandbox_calls"]["executed"] == 0
