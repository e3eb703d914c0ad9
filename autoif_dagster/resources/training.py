"""Training with TRL: SFT (SFTTrainer) and offline DPO (DPOTrainer), a whole-model fine-tune or
a LoRA adapter (peft), on a GPU of the run's `gpu` resource or on the CPU.

The defaults are the CPU demo scale (LoRA, one epoch, small batches: minutes for the
embedded 135M model on two cores); `TrainingResource.paper()` is the paper's (full fine-tune,
SFT lr 7e-6 x 3 epochs x batch 128 at 8192 tokens; DPO lr 5e-7, beta 0.3, 2 epochs, batch 64
at 4096). Each field's description names the paper's value. torch, transformers, trl and
peft are imported when a model trains, not when the definitions load.
"""

import logging
import os
import tempfile
import time
from importlib import metadata
from typing import Any, Literal

import dagster as dg
from pydantic import Field, model_validator

from ..method import training as method
from .checkpoints import Checkpoint, TrainedModel, load_causal_lm, load_model
from .gpu import GPUError, GPUResource, visible_gpus
from .models import model_identity, resolve_model

LIBRARIES = ("torch", "transformers", "trl", "peft")


class Phase(dg.Config):
    """The optimisation of one kind of training."""

    learning_rate: float = Field(gt=0.0)
    epochs: float = Field(1.0, gt=0.0, description="Passes over the data (a fraction stops part-way).")
    max_steps: int = Field(-1, ge=-1, description="Optimizer steps, overriding epochs; -1: the epochs decide.")
    batch_size: int = Field(4, ge=1, description="Sequences per optimizer step.")
    micro_batch_size: int = Field(
        2, ge=1, description="Sequences per forward pass: batch_size / micro_batch_size passes are "
        "accumulated per step (memory, not maths: DPO on the demo's pairs with the 135M model peaked at "
        "12.3 GiB RSS with 4, 4.2 GiB with 1; a 49K-token vocabulary's logits dominate)."
    )

    @model_validator(mode="after")
    def _accumulates(self) -> "Phase":
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                             f"({self.micro_batch_size})")
        return self


class SFTPhase(Phase):
    learning_rate: float = Field(2e-4, gt=0.0, description="Paper: 7e-6 (a full fine-tune; LoRA wants ~100x more).")
    epochs: float = Field(1.0, gt=0.0, description="Paper: 3.")
    batch_size: int = Field(4, ge=1, description="Paper: 128.")
    max_length: int = Field(1024, ge=16, description="Paper: 8192.")


class DPOPhase(Phase):
    learning_rate: float = Field(2e-5, gt=0.0, description="Paper: 5e-7 (a full fine-tune).")
    epochs: float = Field(1.0, gt=0.0, description="Paper: 2.")
    batch_size: int = Field(4, ge=1, description="Paper: 64.")
    max_length: int = Field(1024, ge=16, description="Paper: 4096.")
    beta: float = Field(0.3, gt=0.0, description="How far the policy may move from the reference model. Paper: 0.3.")
    start: Literal["sft", "base"] = Field(
        "sft", description="Train from the SFT checkpoint (the paper's order: base -> SFT -> DPO; the reference "
        "model is the SFT policy) or from the base model.",
    )


class OnlinePhase(DPOPhase):
    """Online DPO: each iteration the current policy samples, the verifiers judge, a DPO step
    trains on the pairs (assets/online_dpo.py). The DPO step's fields are DPOPhase's."""

    iterations: int = Field(2, ge=1, description="Sample-judge-train rounds; each keeps its checkpoint and pairs.")
    prompts: int | None = Field(16, ge=1, description="Instruction prompts sampled per iteration (those whose "
                                "instruction has verifiers, in id order); None: all.")
    samples_per_prompt: int = Field(4, ge=2, description="Answers the policy samples per prompt (K).")
    query_only_samples: int = Field(1, ge=0, description="More answers to the prompt's query alone: rejected "
                                    "candidates (a small policy's answers to one prompt tend to pass or fail together).")
    temperature: float = Field(0.8, ge=0.0, description="Paper: 0.8.")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, description="Per answer; one cut off is dropped, as in the responses stage.")
    learning_rate: float = Field(2e-5, gt=0.0, description="Of each DPO step. Paper: 5e-7 (a full fine-tune).")
    start: Literal["sft", "base"] = Field(
        "sft", description="The first policy: the SFT checkpoint (the paper's order) or the base model.")


class GRPOPhase(Phase):
    """GRPO with the verifiers as the reward (assets/grpo.py): each step samples K answers per
    prompt from the policy, rewards each with its pass rate in the sandbox (rewards.py), and
    moves the policy toward the answers that did better than their group."""

    learning_rate: float = Field(5e-5, gt=0.0, description="Of the adapter (LoRA; a whole model wants ~10x less).")
    batch_size: int = Field(8, ge=1, description="Completions per optimizer step (prompts x samples_per_prompt).")
    micro_batch_size: int = Field(4, ge=1, description="Completions per forward pass.")
    prompts: int | None = Field(32, ge=1, description="RL prompts trained on (a seeded sample of rl_prompts); "
                                "None: all.")
    samples_per_prompt: int = Field(4, ge=2, description="Answers sampled per prompt (GRPO's group, K): the "
                                    "advantage is each answer's reward against its group's.")
    max_completion_length: int = Field(256, ge=1, description="Tokens per answer; one cut off here gets reward 0.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of the policy's answers.")
    beta: float = Field(0.04, ge=0.0, description="KL penalty to the starting policy (0: none, and no KL is "
                        "logged). 0.04: the GRPO paper's (DeepSeekMath).")
    start: Literal["sft", "base"] = Field("sft", description="The policy to start from: the SFT checkpoint or the base.")
    drop_probes: bool = Field(
        False, description="Train without the trip-wire prompts (rl_prompts.probe: a non-answer earns their "
        "reward). Kept by default: their instructions are real ones, and the trip-wire watches them.")
    tripwire_warn: float = Field(
        0.5, ge=0.0, le=1.0, description="Warn when more than this share of the rewarded answers to trip-wire "
        "prompts (whose verifiers a degenerate answer passes) is degenerate: the policy is gaming them.")

    @model_validator(mode="after")
    def _whole_groups(self) -> "GRPOPhase":
        for name in ("batch_size", "micro_batch_size"):
            if getattr(self, name) % self.samples_per_prompt:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of samples_per_prompt "
                                 f"({self.samples_per_prompt}): a step's completions are whole groups")
        return self


class LoRA(dg.Config):
    enabled: bool = Field(True, description="Train a LoRA adapter (peft) rather than every weight. Paper: off.")
    r: int = Field(16, ge=1, description="The adapter's rank.")
    alpha: int = Field(32, ge=1, description="Its scale (alpha / r multiplies the update).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt; None: every linear layer but the output head (peft's 'all-linear')."
    )


class TrainingResource(dg.ConfigurableResource):
    """How the checkpoints are trained: hyperparameters, LoRA or not, the device."""

    seed: int = Field(0, description="Seeds the adapter's initialisation and the data order.")
    lora: LoRA = LoRA()
    sft: SFTPhase = SFTPhase()
    dpo: DPOPhase = DPOPhase()
    online: OnlinePhase = OnlinePhase()
    grpo: GRPOPhase = GRPOPhase()
    lr_scheduler: str = Field("cosine", description="transformers' scheduler name (the paper does not say).")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Share of the steps spent warming the lr up.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, ~20% slower. On for a "
        "large model on a GPU; off on a CPU, where memory is not what runs out."
    )
    bf16: bool | None = Field(None, description="bf16 mixed precision. None: on a GPU that supports it, off on a CPU.")
    gpu: dg.ResourceDependency[GPUResource]  # the run's GPUs (shared with the LLM resources); unset: any there is

    @classmethod
    def paper(cls, **overrides: Any) -> "TrainingResource":
        """The paper's hyperparameters (a full fine-tune on GPUs; never the default)."""
        return cls(lora=LoRA(enabled=False), gradient_checkpointing=True,
                   sft=SFTPhase(learning_rate=7e-6, epochs=3, batch_size=128, micro_batch_size=8, max_length=8192),
                   dpo=DPOPhase(learning_rate=5e-7, epochs=2, batch_size=64, micro_batch_size=4, max_length=4096,
                                beta=0.3),
                   **overrides)

    # --- public -------------------------------------------------------------------------------

    def train_sft(self, rows: list[dict[str, Any]], base: str, data_version: str,
                  log: logging.Logger | None = None) -> TrainedModel:
        """SFT from the base model on `method.sft_rows` rows."""
        return self._train("sft", rows, base, None, data_version, log)

    def train_dpo(self, rows: list[dict[str, Any]], base: str, start: Checkpoint | None, data_version: str,
                  log: logging.Logger | None = None) -> TrainedModel:
        """Offline DPO on `method.dpo_rows` rows, from `start` (the SFT checkpoint) or, with
        None, from the base model. The reference model is where training starts."""
        return self._train("dpo", rows, base, start, data_version, log)

    def train_online_dpo(self, rows: list[dict[str, Any]], base: str, start: Checkpoint | None, data_version: str,
                         iteration: int, log: logging.Logger | None = None) -> TrainedModel:
        """One online-DPO step (training.online's hyperparameters) on an iteration's pairs, from
        the current policy `start` (None: the base model)."""
        trained = self._train("online_dpo", rows, base, start, data_version, log)
        trained.manifest["online_iteration"] = iteration
        return trained

    def train_grpo(self, rows: list[dict[str, Any]], base: str, start: Checkpoint | None, data_version: str,
                   reward: Any, log: logging.Logger | None = None) -> TrainedModel:
        """GRPO on `method.grpo_rows` rows, from `start` (None: the base model), rewarded by
        `reward` (a rewards.VerifierReward: it is told the tokenizer's end-of-sequence ids)."""
        return self._train("grpo", rows, base, start, data_version, log, reward=reward)

    def device(self, what: str) -> str:
        """"cpu", or the CUDA device (in this process's numbering) of the run's first GPU; a
        GPU configured but absent, or a torch without CUDA on a GPU machine, is a GPUError."""
        gpus = self.gpu or GPUResource()
        if not gpus.devices and not visible_gpus():
            return "cpu"
        physical = gpus.claim(1, what)[0]
        import torch

        if not torch.cuda.is_available():
            raise GPUError(f"{what}: GPU {physical} is configured, but this torch ({torch.__version__}) cannot use "
                           "CUDA: install the GPU build (make install-gpu), or unset gpu.devices")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:  # torch numbers the devices it sees: make it see the physical ones as they are
            return f"cuda:{physical}"
        order = [int(d) for d in visible.split(",") if d.strip().isdigit()]
        if physical not in order:
            raise GPUError(f"{what}: GPU {physical} is not among this process's CUDA_VISIBLE_DEVICES ({visible})")
        return f"cuda:{order.index(physical)}"

    # --- internals ----------------------------------------------------------------------------

    def _train(self, kind: Literal["sft", "dpo", "online_dpo", "grpo"], rows: list[dict[str, Any]], base: str,
               start: Checkpoint | None, data_version: str, log: logging.Logger | None,
               reward: Any = None) -> TrainedModel:
        log = log or logging.getLogger(__name__)
        device = self.device(f"{kind} training")
        started = time.perf_counter()
        model, tokenizer, lineage = self._starting_model(base, start)
        log.info(f"{kind}: {len(rows)} rows, from {lineage['start']['from']} ({lineage['adapter']}), on {device}")
        phase = {"sft": self.sft, "dpo": self.dpo, "online_dpo": self.online, "grpo": self.grpo}[kind]
        train_rows, ids = method.without_ids(rows)
        with tempfile.TemporaryDirectory(prefix=f"autoif-{kind}-") as scratch:
            trainer = self._trainer(kind, phase, model, tokenizer, train_rows, device, scratch,
                                    new_adapter=lineage["new_adapter"], log=log, reward=reward)
            result = trainer.train()
            history = list(trainer.state.log_history)
            trained = trainer.model
            del trainer  # the reference model (a copy, for a whole-model DPO) goes with it
        seconds = time.perf_counter() - started
        metrics = {**method.summary(history), "steps": result.global_step, "train_loss": result.training_loss,
                   "wall_seconds": round(seconds, 1),
                   "seconds_per_step": round(seconds / max(result.global_step, 1), 2)}
        hyper = {"seed": self.seed, "lr_scheduler": self.lr_scheduler, "warmup_ratio": self.warmup_ratio,
                 **phase.model_dump(), "lora": lineage["lora"]}
        lineage.pop("new_adapter")
        version = method.provenance(kind=kind, base=lineage["base_model_identity"],
                                    start=start.version if start is not None else None,
                                    data=data_version, hyperparameters=hyper)
        manifest = {"kind": kind, "version": version, **lineage,
                    "data": {"asset": {"sft": "sft_dataset", "dpo": "dpo_pairs", "grpo": "rl_prompts"}.get(
                                 kind, "the policy's judged samples"),
                             "data_version": data_version,
                             "rows": len(ids), "ids": ids},
                    "hyperparameters": hyper, "metrics": metrics, "log_history": history, "device": device,
                    "libraries": {name: metadata.version(name) for name in LIBRARIES}}
        return TrainedModel(model=trained, tokenizer=tokenizer, manifest=manifest)

    def _starting_model(self, base: str, start: Checkpoint | None) -> tuple[Any, Any, dict[str, Any]]:
        """The model training starts from, its tokenizer, and what the manifest says of it:
        which weights, whether the result is an adapter (and on what) or a whole model."""
        from transformers import AutoTokenizer

        lineage: dict[str, Any] = {"base_model": base, "base_model_identity": model_identity(base),
                                   "adapter": "lora" if self.lora.enabled else "full", "adapter_base": None,
                                   "start": {"from": "base", "checkpoint": None}}
        if start is None:
            model = load_causal_lm(base)
            tokenizer = AutoTokenizer.from_pretrained(resolve_model(base))
            lineage.update(adapter_base=base if self.lora.enabled else None, new_adapter=self.lora.enabled)
        else:
            lineage["start"] = {"from": start.manifest["kind"] + "_checkpoint", "checkpoint": str(start.path),
                                "version": start.version, "adapter": start.manifest["adapter"]}
            if start.is_lora and self.lora.enabled:  # train the same adapter on: the result applies to the same base
                model, tokenizer = load_model(start, trainable=True)
                lineage.update(adapter_base=start.base, new_adapter=False)
            elif start.is_lora:  # a whole-model fine-tune of the adapted model: fold the adapter in
                model, tokenizer = load_model(start)
                model = model.merge_and_unload().requires_grad_(True)  # peft froze the base's weights
                lineage.update(new_adapter=False)
            else:  # a whole checkpoint: a new adapter goes on it, or every weight trains on
                model, tokenizer = load_model(start)
                lineage.update(adapter_base=str(start.path) if self.lora.enabled else None,
                               new_adapter=self.lora.enabled)
        lineage["lora"] = (self.lora.model_dump() if lineage["new_adapter"] else
                           _adapter_settings(model) if lineage["adapter"] == "lora" else None)
        return model, tokenizer, lineage

    def _trainer(self, kind: str, phase: Phase, model: Any, tokenizer: Any, rows: list[dict[str, Any]], device: str,
                 scratch: str, new_adapter: bool, log: logging.Logger, reward: Any = None) -> Any:
        import datasets
        import torch
        import trl
        from transformers import PrinterCallback

        cpu = device == "cpu"
        if not cpu:
            torch.cuda.set_device(device)
        bf16 = (not cpu and torch.cuda.is_bf16_supported()) if self.bf16 is None else self.bf16
        common: dict[str, Any] = dict(
            output_dir=scratch, save_strategy="no", report_to="none", logging_steps=1, disable_tqdm=True,
            seed=self.seed, data_seed=self.seed, use_cpu=cpu, bf16=bf16,
            learning_rate=phase.learning_rate, num_train_epochs=phase.epochs, max_steps=phase.max_steps,
            per_device_train_batch_size=phase.micro_batch_size,
            gradient_accumulation_steps=phase.batch_size // phase.micro_batch_size,
            lr_scheduler_type=self.lr_scheduler, warmup_steps=self.warmup_ratio,  # < 1: a share of the steps
            gradient_checkpointing=self.gradient_checkpointing, dataloader_num_workers=0,
        )
        peft_config = self._peft_config() if new_adapter else None
        dataset = datasets.Dataset.from_list(rows)
        callbacks = [_log_steps(log, kind)]
        if kind == "grpo":
            assert isinstance(phase, GRPOPhase)
            callbacks.append(_tripwire(log, phase.tripwire_warn))
            args = trl.GRPOConfig(**common, num_generations=phase.samples_per_prompt, beta=phase.beta,
                                  max_completion_length=phase.max_completion_length, temperature=phase.temperature)
            trainer = trl.GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                                      processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
            reward.eos_token_ids = frozenset(trainer.eos_token_ids)  # what marks an answer as finished
        elif kind == "sft":
            args = trl.SFTConfig(**common, max_length=phase.max_length, completion_only_loss=True)
            trainer = trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                     peft_config=peft_config, callbacks=callbacks)
        else:
            args = trl.DPOConfig(**common, max_length=phase.max_length, beta=phase.beta)
            trainer = trl.DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                     peft_config=peft_config, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)  # it prints each step's dict to stdout; _log_steps logs it
        return trainer

    def _peft_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.lora.r, lora_alpha=self.lora.alpha, lora_dropout=self.lora.dropout,
                          target_modules=self.lora.target_modules or "all-linear", task_type="CAUSAL_LM")


def _adapter_settings(model: Any) -> dict[str, Any]:
    """The LoRA settings of an adapter trained on (those of the checkpoint it came from)."""
    config = model.peft_config["default"]
    modules = config.target_modules
    return {"enabled": True, "r": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
            "target_modules": sorted(modules) if isinstance(modules, (set, list)) else modules}


def _log_steps(log: logging.Logger, kind: str) -> Any:
    """A callback putting each logged step into the run's log (the UI shows training as it goes)."""
    from transformers import TrainerCallback

    class LogSteps(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and ("loss" in logs or "reward" in logs):
                shown = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, float))
                log.info(f"{kind} step {state.global_step}/{state.max_steps}: {shown}")

    return LogSteps()


def _tripwire(log: logging.Logger, warn_above: float) -> Any:
    """A callback warning in the run's log at each step where the share of degenerate answers
    among the rewarded ones to trip-wire prompts (rewards.tripwire) is above `warn_above`."""
    from transformers import TrainerCallback

    class Tripwire(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            share = (logs or {}).get("tripwire/degenerate_rewarded")
            if share is not None and share > warn_above:
                log.warning(f"grpo step {state.global_step}: {share:.0%} of the rewarded answers to trip-wire prompts "
                            "are degenerate (empty, a few words, one word repeated): the policy is gaming verifiers "
                            "that a non-answer passes")

    return Tripwire()
