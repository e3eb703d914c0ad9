"""`dagster-webserver -w workspace.yaml` (what `make ui` / `dagster dev` serve) loads the
code location and shows every asset of the graph, queried over its GraphQL API."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from autoif_dagster.schemas import SCHEMAS

from .servers import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
QUERY = "{ assetNodes { assetKey { path } groupName } }"


@pytest.fixture
def webserver(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, f"{url}/server_info", 120, "dagster-webserver")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_ui_serves_the_whole_asset_graph(webserver):
    nodes = []
    for _ in range(30):  # the code location loads in the background after start-up
        data = httpx.post(f"{webserver}/graphql", json={"query": QUERY}, timeout=30).json()
        nodes = data.get("data", {}).get("assetNodes") or []
        if nodes:
            break
        time.sleep(1)
    names = {"/".join(n["assetKey"]["path"]) for n in nodes}
    assert names == set(SCHEMAS)
    groups = {n["groupName"] for n in nodes}
    assert groups == {"instructions", "verifiers", "consistency", "queries", "responses", "datasets"}
