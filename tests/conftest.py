"""Shared fixtures. One vLLM engine serves the whole session: LLMResource caches engines per
process, so every test that uses the embedded model reuses the first one started."""

import json
import os
import subprocess
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
from autoif_dagster.resources.llm import LLMResource, shutdown_engines
from autoif_dagster.resources.models import SMOKE_MODEL
from autoif_dagster.resources.nli import NLIResource
from autoif_dagster.resources.sandbox import SandboxResource

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
        verifiers=VerifierConfig(samples_per_instruction=3),
        crossval=CrossValConfig(min_functions=1, min_cases=1, case_agreement_above=0.0, function_min_accuracy=0.5),
        queries=QueryConfig(pool_size=6, per_instruction=1),
        responses=ResponseConfig(samples_per_prompt=2, pass_rate_above=0.0),
    )


@pytest.fixture(scope="session")
def llm():
    yield LLMResource(model=SMOKE_MODEL)
    shutdown_engines()  # while pytest's log capture is still open


@pytest.fixture(scope="session")
def sandbox():
    """Verifiers run where the pipeline runs them: in the Docker sandbox (required in CI by
    AUTOIF_REQUIRE_DOCKER=1); without an engine, in the local backend."""
    required = os.environ.get("AUTOIF_REQUIRE_DOCKER") == "1"
    docker = required or (which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0)
    return SandboxResource(backend="docker" if docker else "local", timeout_s=2.0)


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
