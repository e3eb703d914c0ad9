"""A home: the folder where one deployment keeps what its runs make, and the resources that
read and write there. The layout is declared here once; everything else asks a Home for a path.

    HOME/ledger.sqlite   every LLM completion and sandbox verdict (resources/ledger.py), unless
                         `ledger_url` ($AUTOIF_LEDGER_URL) puts them on a PostgreSQL server
    HOME/assets/         the artifacts, a Parquet file per asset (per round where partitioned)
    HOME/exports/        the training data in trainers' formats, one folder per version
    HOME/checkpoints/    trained checkpoints
    HOME/dagster/        the embedded Dagster instance (the CLI's; a deployment may use its own)
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Home:
    root: Path
    ledger_url: str | None = None  # postgresql://...: one ledger shared by many homes and machines

    @classmethod
    def from_env(cls, root: Path | None = None) -> "Home":
        """`root`, else $AUTOIF_HOME, else ./.autoif; the ledger at $AUTOIF_LEDGER_URL if set."""
        root = root or Path(os.environ.get("AUTOIF_HOME", Path.cwd() / ".autoif"))
        return cls(Path(root).resolve(), os.environ.get("AUTOIF_LEDGER_URL") or None)

    @property
    def ledger(self) -> Path | str:
        return self.ledger_url or self.root / "ledger.sqlite"

    @property
    def assets(self) -> Path:
        return self.root / "assets"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    def resources(self, llm_backend: str | None = None, sandbox_backend: str | None = None) -> dict[str, Any]:
        """The project's resources, writing under this home, with the embedded default models;
        a backend not named is its resource's default (vllm, docker)."""
        from .config import AutoIFConfig, EvaluationConfig
        from .resources.checkpoints import CheckpointIOManager
        from .resources.exports import ExportResource
        from .resources.gpu import GPUResource
        from .resources.io_manager import ParquetIOManager
        from .resources.llm import LLMResource
        from .resources.models import DEFAULT_BASE, DEFAULT_POLICY, DEFAULT_SUPERVISOR
        from .resources.nli import NLIResource
        from .resources.sandbox import SandboxResource
        from .resources.training import TrainingResource

        # one ledger: every LLM completion and sandbox verdict, so a re-run asks nothing twice
        ledger = str(self.ledger)
        llm = {"ledger_path": ledger, **({"backend": llm_backend} if llm_backend else {})}
        gpu = GPUResource.configure_at_launch()  # the devices, set once per run for every model
        return {
            "autoif": AutoIFConfig(),
            "gpu": gpu,
            "supervisor_llm": LLMResource(model=DEFAULT_SUPERVISOR, gpu=gpu, **llm),
            # The model that answers the queries. The supervisor's model by default (self-alignment:
            # the roles share one engine); a weaker one gives the paper's strong-to-weak setting.
            "policy_llm": LLMResource(model=DEFAULT_POLICY, gpu=gpu, **llm),
            # the model training starts from (online DPO samples from it and its checkpoints) and
            # checkpoints are compared against (evaluation)
            "base_llm": LLMResource(model=DEFAULT_BASE, gpu=gpu, **llm),
            "evaluation_config": EvaluationConfig(),
            # SFT and DPO checkpoints: how they train, and where they are kept
            "training": TrainingResource(gpu=gpu),
            "checkpoint_io_manager": CheckpointIOManager(base_dir=str(self.checkpoints)),
            "nli": NLIResource(),
            "sandbox": SandboxResource(ledger_path=ledger, **({"backend": sandbox_backend} if sandbox_backend else {})),
            "io_manager": ParquetIOManager(base_dir=str(self.assets)),
            "exports": ExportResource(directory=str(self.exports)),
        }
