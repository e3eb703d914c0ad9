"""Model checkpoints as artifacts: the IO manager of the training assets (the Parquet one
takes only frames).

A training asset returns a `TrainedModel` (the model in memory, its tokenizer, its manifest);
the IO manager writes it as a normal Hugging Face checkpoint, a whole model or a LoRA adapter
(peft), under `BASE_DIR/ASSET/NAME/`, and a downstream asset is handed a `Checkpoint` (its path
and manifest), not the weights: a trainer loads them as it needs (`load_model`), an engine
from the path (`Checkpoint.serving`).

Written atomically: the files go into a hidden directory beside the target, the manifest
(`autoif-checkpoint.json`, listing every file and its size) is written last, the directory is
renamed into place and only then does `ASSET/LATEST` name it. A killed run leaves at most a
hidden staging directory (removed by the next write) or a directory without its manifest,
which is refused, naming it, rather than read as whole.
"""

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from .models import CHECKPOINT_MANIFEST, resolve_model

MANIFEST = CHECKPOINT_MANIFEST  # written last: a directory without it is not a checkpoint
LATEST = "LATEST"  # ASSET/LATEST: the name of the newest whole checkpoint of that asset
FORMAT = 1  # the manifest's layout


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, half-written or does not match its manifest."""


@dataclass(frozen=True)
class Checkpoint:
    """A whole checkpoint on disk: its directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def is_lora(self) -> bool:
        return self.manifest["adapter"] == "lora"

    @property
    def base(self) -> str:
        """The model whose weights this checkpoint needs under it: for a LoRA adapter, what it
        applies to (an embedded alias, or the directory of a whole checkpoint it was trained
        on); for a whole model, itself."""
        return self.manifest["adapter_base"] if self.is_lora else str(self.path)

    def serving(self) -> dict[str, str | None]:
        """How an engine loads it: `model` (an alias or a directory, for LLMResource.model or
        vLLM's `model`), and for an adapter `lora` (the adapter directory, for vLLM's LoRARequest)."""
        return {"model": self.base, "lora": str(self.path) if self.is_lora else None}


@dataclass
class TrainedModel:
    """What a training asset returns: the trained model (a transformers model, or a peft model
    whose "default" adapter is what was trained), its tokenizer and its manifest (base model,
    data version, hyperparameters, metrics; the IO manager adds the files)."""

    model: Any
    tokenizer: Any
    manifest: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The checkpoint in `path`, or a CheckpointError saying why it is not a whole one."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a whole checkpoint: it has no {MANIFEST} (written last), so its "
                              "writing never finished (a killed run?); materialize the asset again") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}/{MANIFEST} is not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: manifest format {manifest.get('format')!r}, this code reads {FORMAT}")
    for name, size in manifest["files"].items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            found = file.stat().st_size if file.is_file() else "missing"
            raise CheckpointError(f"{path}: {name} does not match the manifest ({size} bytes expected, {found})")
    return Checkpoint(path=path, manifest=manifest)


def write_checkpoint(trained: TrainedModel, folder: str | os.PathLike, name: str) -> Checkpoint:
    """Write `trained` to `folder/name` atomically (see the module's docstring) and point
    `folder/LATEST` at it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # a killed write's leftovers: never read, and their space is needed
        shutil.rmtree(stale, ignore_errors=True)
    target = folder / name
    if target.exists():
        raise CheckpointError(f"{target} already exists")
    staging = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        staging.mkdir()
        save_model(trained.model, staging)
        trained.tokenizer.save_pretrained(staging)
        files = {p.relative_to(staging).as_posix(): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, **trained.manifest, "files": files,
                    "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    latest = folder / f".{LATEST}.{uuid.uuid4().hex[:8]}.tmp"
    latest.write_text(name + "\n")
    os.replace(latest, folder / LATEST)
    return Checkpoint(path=target, manifest=manifest)


def save_model(model: Any, directory: Path) -> None:
    """A whole model as safetensors, or a peft model's trained adapter ("default") alone: DPO
    on an adapter keeps a frozen copy of it ("ref") as its reference model, not part of the result."""
    if hasattr(model, "peft_config"):
        model.save_pretrained(directory, selected_adapters=["default"])
    else:
        model.save_pretrained(directory)


def latest_checkpoint(folder: str | os.PathLike, asset: str) -> Checkpoint:
    """The newest whole checkpoint of `asset` in `folder` (ASSET/LATEST names it)."""
    folder = Path(folder)
    try:
        name = (folder / LATEST).read_text().strip()
    except FileNotFoundError:
        raise CheckpointError(f"{asset} has not been materialized (no {folder / LATEST}): materialize it first "
                              "(the train job)") from None
    return read_checkpoint(folder / name)


def load_model(checkpoint: Checkpoint, trainable: bool = False, dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a checkpoint: a whole model from its directory, an adapter on its
    base (with `trainable`, the adapter's weights train on). A base that cannot load is an
    error naming it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    if not checkpoint.is_lora:
        return load_causal_lm(str(checkpoint.path), dtype), tokenizer
    from peft import PeftModel

    base = load_causal_lm(checkpoint.base, dtype)
    return PeftModel.from_pretrained(base, str(checkpoint.path), is_trainable=trainable), tokenizer


def load_causal_lm(name: str, dtype: Any = None) -> Any:
    """A causal LM by embedded alias, directory or Hugging Face id, or a CheckpointError naming
    it and why it did not load."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError...: one clear error
        raise CheckpointError(f"could not load model {name!r} ({path}): {type(exc).__name__}: {exc}") from exc


class _CheckpointIO(dg.IOManager):
    def __init__(self, base_dir: str, keep: int):
        self.base_dir = Path(base_dir)
        self.keep = keep

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        asset = context.asset_key.path[-1]
        if not isinstance(obj, TrainedModel):
            raise TypeError(f"{asset}: the checkpoint IO manager writes a TrainedModel, got {type(obj).__name__}")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{(context.run_id or uuid.uuid4().hex)[:8]}"  # sorts by time: pruning keeps the newest
        folder = self.base_dir / asset
        checkpoint = write_checkpoint(obj, folder, name)
        pruned = self._prune(folder, keep=name)
        context.add_output_metadata({
            "path": dg.MetadataValue.path(str(checkpoint.path)),
            "checkpoint_bytes": sum(checkpoint.manifest["files"].values()),
            **({"pruned": pruned} if pruned else {}),
        })
        context.log.info(f"{asset}: checkpoint written to {checkpoint.path}")

    def _prune(self, folder: Path, keep: str) -> list[str]:
        """Older checkpoints past the newest `self.keep` (whole ones and manifest-less leftovers)."""
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        old = [n for n in names[:-self.keep] if n != keep]
        for name in old:
            shutil.rmtree(folder / name, ignore_errors=True)
        return old

    def load_input(self, context: dg.InputContext) -> Checkpoint:
        asset = context.asset_key.path[-1]
        return latest_checkpoint(self.base_dir / asset, asset)


class CheckpointIOManager(dg.ConfigurableIOManagerFactory):
    """Each training asset's checkpoints under `base_dir/ASSET/` (a local directory: engines and
    trainers read checkpoints from disk), the newest named by `ASSET/LATEST`."""

    base_dir: str
    keep: int = Field(2, ge=1, description="Checkpoints kept per asset (the newest); older ones are deleted.")

    def create_io_manager(self, context: dg.InitResourceContext) -> _CheckpointIO:
        return _CheckpointIO(self.base_dir, self.keep)
