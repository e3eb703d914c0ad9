"""Step 13, training: the SFT checkpoint and the offline-DPO checkpoint, trained with TRL
(resources/training.py) on the training data, and written by the checkpoint IO manager
(resources/checkpoints.py) as Hugging Face checkpoints with their manifests."""

from typing import Any

import dagster as dg
import polars as pl

from .. import pools
from ..method import training as method
from ..resources.checkpoints import Checkpoint, CheckpointError, TrainedModel
from ..resources.llm import LLMResource
from ..resources.vllm_engine import shutdown_engines
from ..resources.training import TrainingResource
from ..versions import frame_version, versioned_output
from .reporting import curves

GROUP = "training"
CHECKPOINT_IO = "checkpoint_io_manager"  # the resource key of resources.checkpoints.CheckpointIOManager


@dg.asset(group_name=GROUP, kinds={"pytorch", "huggingface"}, pool=pools.GPU, io_manager_key=CHECKPOINT_IO)
def sft_checkpoint(context: dg.AssetExecutionContext, training: TrainingResource, base_llm: LLMResource,
                   sft_dataset: pl.DataFrame) -> dg.Output[TrainedModel]:
    """The base model (base_llm's) fine-tuned on the SFT data, the loss on the answers only: a
    LoRA adapter on it, or a whole model (training.lora.enabled)."""
    rows = method.sft_rows(sft_dataset.to_dicts())  # empty or malformed data fails here, before a model loads
    shutdown_engines()  # an engine an earlier step of the run left in memory: one model at a time
    trained = training.train_sft(rows, base=base_llm.model, data_version=frame_version(sft_dataset), log=context.log)
    return checkpoint_output(trained)


@dg.asset(group_name=GROUP, kinds={"pytorch", "huggingface"}, pool=pools.GPU, io_manager_key=CHECKPOINT_IO)
def dpo_checkpoint(context: dg.AssetExecutionContext, training: TrainingResource, base_llm: LLMResource,
                   dpo_pairs: pl.DataFrame, sft_checkpoint: Checkpoint) -> dg.Output[TrainedModel]:
    """Offline DPO on the preference pairs, from the SFT checkpoint (the paper's order; the
    reference model is the SFT policy) or from the base model (training.dpo.start: the
    dependency on sft_checkpoint stays in the graph, its weights are then unused)."""
    rows = method.dpo_rows(dpo_pairs.to_dicts())
    start = starting_checkpoint(sft_checkpoint, training.dpo.start, base_llm, "training.dpo.start")
    shutdown_engines()
    trained = training.train_dpo(rows, base=base_llm.model, start=start, data_version=frame_version(dpo_pairs),
                                 log=context.log)
    return checkpoint_output(trained)


def starting_checkpoint(sft_checkpoint: Checkpoint, start: str, base_llm: LLMResource, setting: str
                        ) -> Checkpoint | None:
    """Where a later phase starts: the SFT checkpoint (None for "base"), which must have been
    trained from base_llm's model (else its adapter would be applied to another model)."""
    if start != "sft":
        return None
    if sft_checkpoint.manifest["base_model"] != base_llm.model:
        raise CheckpointError(f"sft_checkpoint ({sft_checkpoint.path}) was trained from "
                              f"{sft_checkpoint.manifest['base_model']!r}, but base_llm is {base_llm.model!r}: "
                              f"materialize sft_checkpoint again, or set {setting} to 'base'")
    return sft_checkpoint


def checkpoint_output(trained: TrainedModel, extra: dict[str, Any] | None = None) -> dg.Output:
    """The checkpoint with its provenance as its data version, and what the UI shows of it:
    the loss curve, the final metrics, where it came from and how it was trained; `extra`
    adds an asset's own (online DPO's iterations)."""
    m = trained.manifest
    metrics, history = m["metrics"], m["log_history"]
    plots: dict[str, Any] = {"loss_curve": curves({"train loss": method.loss_curve(history)},
                                                  f"{m['kind']} training loss", "loss")}
    if m["kind"] in ("dpo", "online_dpo"):
        plots["reward_curve"] = curves({k.split("/")[1]: method.loss_curve(history, k)
                                        for k in ("rewards/chosen", "rewards/rejected", "rewards/margins")},
                                       "DPO implicit rewards", "reward")
    figures = {k: dg.MetadataValue.float(round(metrics[k], 4)) for k in
               ("train_loss", "first_loss", "last_loss", "rewards/accuracies", "rewards/margins") if k in metrics}
    return versioned_output(trained, m["version"], {
        "base_model": m["base_model"], "adapter": m["adapter"], "start": m["start"]["from"],
        **({"adapter_base": m["adapter_base"]} if m["adapter_base"] else {}),
        "data_version": m["data"]["data_version"], "rows": m["data"]["rows"],
        "steps": metrics["steps"], **figures, "wall_seconds": metrics["wall_seconds"],
        "seconds_per_step": metrics["seconds_per_step"], "device": m["device"],
        "hyperparameters": dg.MetadataValue.json(m["hyperparameters"]),
        "libraries": dg.MetadataValue.json(m["libraries"]),
        **plots, **(extra or {}),
    })
