"""Shared fixtures. One vLLM engine serves the whole session: LLMResource caches engines per
process, so every test that uses the embedded model reuses the first one started."""

import json
import subprocess
import uuid
import warnings
from shutil import which

import pytest

from autoif_dagster.config import (
    AugmentConfig,
    AutoIFConfig,
    CrossValConfig,
    QueryConfig,
    ResponseConfig,
    VerifierConfig,
)
from autoif_dagster.resources.exports import ExportResource
from autoif_dagster.resources.io_manager import ParquetIOManager
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.vllm_engine import shutdown_engines
from autoif_dagster.resources.models import SMOKE_MODEL
from autoif_dagster.resources.nli import NLIResource
from autoif_dagster.resources.sandbox import SandboxResource
from tests.ci import CI

QUERIES = [
    "How do I make a good cup of coffee at home?",
    "Explain what a hash table is to a new programmer.",
    "What should I pack for a weekend hiking trip?",
    "Give me some tips for learning to play the guitar.",
    "Why is the sky blue during the day?",
    "How can I improve my sleep schedule?",
]


@pytest.fixture(scope="session")
def queries_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "queries.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "query": q}) for i, q in enumerate(QUERIES)))
    return str(path)


@pytest.fixture(scope="session")
def tiny_config(queries_file):
    """The smallest scale that still exercises every stage."""
    return AutoIFConfig(
        queries_path=queries_file,
        augment=AugmentConfig(rounds=1, max_instructions=4),
        verifiers=VerifierConfig(samples_per_instruction=3, samples_per_wave=3, samples_budget=3.0),  # one wave, whole: counts stay exact
        crossval=CrossValConfig(min_functions=1, min_cases=1, case_agreement_above=0.0, function_min_accuracy=0.5),
        queries=QueryConfig(pool_size=6, per_instruction=1),
        responses=ResponseConfig(samples_per_prompt=2, pass_rate_above=0.0),
    )


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL server (pgserver's bundled binaries), one per session."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
def postgres_database(postgres_server) -> str:
    """The URL of a database of the test's own on that server."""
    name = "t_" + uuid.uuid4().hex[:12]
    postgres_server.psql(f"CREATE DATABASE {name};")
    return postgres_server.get_uri(name)


@pytest.fixture(scope="session")
def llm():
    yield LLMResource(model=SMOKE_MODEL)
    shutdown_engines()  # while pytest's log capture is still open


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under AUTOIF_CI=1 a skip is a failure: what CI cannot see is not tested."""
    report = (yield).get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome, report.longrepr = "failed", f"AUTOIF_CI=1 but skipped: {reason}"


@pytest.fixture(scope="session")
def sandbox():
    """Verifiers run where the pipeline runs them: in the Docker sandbox (under AUTOIF_CI=1,
    or failing); without an engine, in the unisolated local backend, with a warning."""
    if which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        if CI:
            pytest.fail("AUTOIF_CI=1 but no Docker engine answers `docker info` (make sandbox starts one)")
        warnings.warn("no Docker engine: the sandbox tests run on the unisolated local backend", stacklevel=1)
        return SandboxResource(backend="local", timeout_s=2.0)
    return SandboxResource(backend="docker", timeout_s=2.0)


@pytest.fixture
def resources(tmp_path, tiny_config, llm, sandbox):
    return {
        "autoif": tiny_config,
        "supervisor_llm": llm,
        "policy_llm": llm,
        "nli": NLIResource(),
        "sandbox": sandbox,
        "io_manager": ParquetIOManager(base_dir=str(tmp_path / "assets")),
        "exports": ExportResource(directory=str(tmp_path / "exports")),
    }
