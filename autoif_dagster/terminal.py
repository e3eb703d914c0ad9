"""What a terminal shows while `autoif run`, `train` or `evaluate` goes: a line as each stage
starts and ends, and the warnings and errors a person can act on. Every event still goes to
the Dagster instance (the UI's run page); `--verbose` prints them all instead, as Dagster's own
console logger does.
"""

import logging
import sys
import time

import dagster as dg

# Dagster events a stage line is made of; everything else stays in the instance.
_STARTED, _SUCCEEDED, _FAILED = "STEP_START", "STEP_SUCCESS", "STEP_FAILURE"
_CHECKED = "ASSET_CHECK_EVALUATION"


class StageLines(logging.Handler):
    """Turns Dagster's log records into one line per stage start and end, for the steps named in
    `stages` (the assets; their checks' steps are left out unless a check fails)."""

    def __init__(self, stages: set[str], stream=None) -> None:
        super().__init__(level=logging.DEBUG)
        self.stages = stages
        self.stream = stream or sys.stdout
        self.started: dict[str, float] = {}

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event, step = meta.get("dagster_event"), meta.get("step_key")
        kind = event.event_type_value if event is not None else None
        if kind == _STARTED and step in self.stages:
            self.started[step] = time.monotonic()
            self._print(f"  {step} ...")
        elif kind == _SUCCEEDED and step in self.stages:
            seconds = time.monotonic() - self.started.pop(step, time.monotonic())
            self._print(f"  {step} done ({seconds:.1f} s)")
        elif kind == _FAILED:
            self._print(f"  {step} FAILED: {meta.get('orig_message', '')}")
        elif kind == _CHECKED:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                name = f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}"
                if evaluation.severity == dg.AssetCheckSeverity.WARN:
                    self._print(f"  check {name} is below its bar (not blocking; its table is on the asset's page)")
                else:
                    self._print(f"  check {name} failed" + (" (blocking: what depends on it is skipped)"
                                                             if evaluation.blocking else ""))
        elif event is None and record.levelno >= logging.WARNING:
            message = meta.get("orig_message", record.getMessage())
            # Dagster's note on each step a failure upstream skipped adds nothing to the FAILED line
            if not message.startswith("Dependencies for step"):
                self._print(f"  {step or 'run'}: {message}")


@dg.logger(
    config_schema={"stages": dg.Field([str], description="Step keys that get a start and an end line.")},
    description="One line per stage as it starts and ends, and actionable warnings (the CLI's default).",
)
def stage_lines(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("autoif", level=logging.DEBUG)
    logger.addHandler(StageLines(set(init_context.logger_config["stages"])))
    return logger


def loggers_config(verbose: bool) -> dict:
    """The run config's `loggers` block for a CLI run: every event (Dagster's console logger), or
    a line per stage of every asset the project defines."""
    if verbose:
        return {"console": {"config": {"log_level": "DEBUG"}}}
    from .definitions import all_assets, model_assets, training_assets

    stages = sorted({assets_def.node_def.name for assets_def in [*all_assets, *model_assets, *training_assets]})
    return {"stage_lines": {"config": {"stages": stages}}}


def quiet_libraries() -> None:
    """The engine's own INFO lines, the weight-dtype warning it prints per tensor, torch's NUMA
    binding notice and deprecation warnings say nothing a user can act on; --verbose keeps them.
    Called before vLLM is imported."""
    import os
    import warnings

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    # vLLM logs its Triton notice before it configures logging, through Python's last-resort handler
    logging.getLogger("vllm").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
