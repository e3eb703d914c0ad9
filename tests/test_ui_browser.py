"""The UI in a real browser: `autoif ui` (`dagster dev`: the webserver and daemon, on loopback) driven
by Playwright in headless Chromium (Debian's). It shows every asset in the graph, and a
partition launched from the asset's page runs through the daemon's queue and succeeds. The
models answer from the recorded default run (AUTOIF_LLM_BACKEND=replay), so no engine starts.

A screenshot of the graph is kept in $AUTOIF_TEST_ARTIFACTS (default .test-artifacts/)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from autoif_dagster.resources.io_manager import read_artifact
from autoif_dagster.resources.ledger import Ledger
from autoif_dagster.schemas import CHECKPOINT_ARTIFACTS, SCHEMAS

from .ci import unavailable
from .rounds import ROUND
from .servers import free_port, stop_group, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
RECORDING = Path(__file__).parent / "fixtures" / "default_run.jsonl.gz"
ARTIFACTS = Path(os.environ.get("AUTOIF_TEST_ARTIFACTS", ROOT / ".test-artifacts"))


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("AUTOIF_CHROMIUM") or shutil.which("chromium")
    if path is None:
        unavailable("no chromium for the browser test: `make browser` installs Debian's")
    return path


@pytest.fixture(scope="module")
def ui(tmp_path_factory, chromium, sandbox):
    home = tmp_path_factory.mktemp("ui-home")
    with Ledger(str(home / "ledger.sqlite")) as ledger:
        ledger.import_completions(RECORDING)
    port = free_port()
    env = {**os.environ, "AUTOIF_LLM_BACKEND": "replay", "AUTOIF_SANDBOX": sandbox.backend}  # docker in CI
    env.pop("DAGSTER_HOME", None)  # the embedded instance under --home
    proc = subprocess.Popen([sys.executable, "-m", "autoif_dagster.cli", "ui", "--home", str(home), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the webserver, daemon and code server
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, f"{url}/server_info", 180, "autoif ui")
        # Dagster's first-visit community prompt (shown on loopback) would cover the page
        httpx.post(f"{url}/graphql", json={"query": "mutation { setNuxSeen }"}, timeout=30).raise_for_status()
        yield url, home
    finally:
        stop_group(proc)  # dagster dev and everything it started


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


def _finished_run(home: Path, asset: str, timeout_s: float = 180) -> dg.DagsterRun:
    """The run the UI launched for `asset`, once it has finished."""
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    deadline = time.time() + timeout_s
    with dg.DagsterInstance.get() as instance:
        while time.time() < deadline:
            runs = [r for r in instance.get_runs() if dg.AssetKey(asset) in (r.asset_selection or ())]
            if runs and runs[0].is_finished:
                return runs[0]
            time.sleep(1)
    pytest.fail(f"no finished run of {asset} within {timeout_s:.0f} s")


def test_graph_shows_every_asset(ui, browser):
    url, _ = ui
    # a large viewport: zoomed to fit, the graph draws whole names (and truncates them below)
    page = browser.new_page(viewport={"width": 4800, "height": 4800})
    page.goto(f"{url}/asset-groups")
    names: set[str] = set()
    for _ in range(20):
        page.wait_for_timeout(1000)
        names = set(page.locator("[class*=assetName]").all_inner_texts())
        if names >= set(SCHEMAS) | set(CHECKPOINT_ARTIFACTS):
            break
        if not names and page.locator("[class*=assetName]").count() == 0:  # groups still collapsed
            page.locator("body").click(position={"x": 2400, "y": 4700})
            page.keyboard.press("Alt+e")  # the graph's "expand all groups"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "asset_graph.png"))
    assert names == set(SCHEMAS) | set(CHECKPOINT_ARTIFACTS)
    # and by stage, as the webserver's GraphQL API serves them
    nodes = httpx.post(f"{url}/graphql", json={"query": "{ assetNodes { assetKey { path } groupName } }"},
                       timeout=30).json()["data"]["assetNodes"]
    assert {n["groupName"] for n in nodes} == {"instructions", "verifiers", "consistency", "queries", "responses", "datasets", "evaluation", "training"}


def test_a_partition_launched_from_the_ui_succeeds(ui, browser):
    url, home = ui
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    # its unpartitioned upstream first: the UI would warn that seed_instructions is missing
    page.goto(f"{url}/assets/seed_instructions")
    page.locator("button").filter(has_text="Materialize").first.click()
    page.get_by_text("Launched run").wait_for()
    assert _finished_run(home, "seed_instructions").status == dg.DagsterRunStatus.SUCCESS

    page.goto(f"{url}/assets/augmented_instructions")
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.locator("[role=dialog]")
    dialog.get_by_text("Partition selection").wait_for()  # the dialog has opened, not just begun to
    partitions = dialog.get_by_placeholder("No matching partitions")
    partitions.fill(ROUND)
    partitions.press("Enter")
    dialog.get_by_text("1 partition", exact=True).wait_for()
    dialog.locator("button").filter(has_text="Launch 1 run").click()
    page.get_by_text("Launched run").wait_for()
    run = _finished_run(home, "augmented_instructions")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == ROUND

    page.goto(f"{url}/runs/{run.run_id}")
    page.get_by_text("Success").first.wait_for()
    rows = read_artifact(home / "assets", "augmented_instructions")
    assert rows.height > 0 and set(rows["round"]) == {ROUND}
