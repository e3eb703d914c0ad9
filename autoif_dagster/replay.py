"""A recorded run's data made again without a model: its completions imported into a home's
ledger, and resources whose LLMs answer only from that ledger (the `replay` backend).

The recording of the default run (tests/fixtures/default_run.jsonl.gz, written by
`benchmarks/bench_main_job.py --record`) is what the default-run tests, the training and chain
benchmarks and `autoif run --llm-backend replay` stand on.
"""

from pathlib import Path
from typing import Any

DEFAULT_RUN = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "default_run.jsonl.gz"


def replay_resources(home: Path, sandbox: Any, recording: Path = DEFAULT_RUN) -> dict[str, Any]:
    """The default resources, writing under `home`, with both LLM roles answering from
    `recording` (imported into home's ledger) and `sandbox` keeping its verdicts there too."""
    from .home import Home
    from .resources.ledger import Ledger
    from .resources.llm import LLMResource

    place = Home(Path(home))
    with Ledger(place.ledger) as store:
        store.import_completions(recording)
    resources = place.resources()
    return {
        **resources,
        **{role: LLMResource(**{**dict(resources[role]), "backend": "replay"}) for role in ("supervisor_llm", "policy_llm")},
        # built anew: Dagster makes a resource again from its constructor's arguments
        "sandbox": type(sandbox)(**{**dict(sandbox), "ledger_path": str(place.ledger)}),
    }
