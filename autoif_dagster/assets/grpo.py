"""Step 13 beside online DPO: GRPO with the verifiers as the reward (RLVR). TRL's GRPO trainer
samples K answers per RL prompt from the policy, each answer's reward is its pass rate under
its instruction's kept verifiers run in the sandbox (rewards.VerifierReward), and the policy
moves toward the answers that beat their group. The trip-wire prompts (whose verifiers a
degenerate answer passes) are watched: a warning in the run's log, and a curve, when the
policy starts earning their reward with non-answers."""

import dagster as dg
import polars as pl

from .. import pools
from ..method import training as method
from ..method.selection import sample_for
from ..resources.checkpoints import Checkpoint, TrainedModel
from ..resources.llm import LLMResource
from ..resources.sandbox import SandboxResource
from ..resources.training import TrainingResource
from ..resources.vllm_engine import shutdown_engines
from ..rewards import VerifierReward
from ..versions import frame_version
from .reporting import curves, md_table
from .training import CHECKPOINT_IO, GROUP, checkpoint_output, starting_checkpoint

# TRL's log keys -> what the asset page calls them
REWARD_CURVES = {"reward": "mean reward (pass rate)", "pass/all_verifiers": "share passing every verifier"}


@dg.asset(group_name=GROUP, kinds={"pytorch", "huggingface"}, pool=pools.GPU, io_manager_key=CHECKPOINT_IO)
def grpo_checkpoint(context: dg.AssetExecutionContext, training: TrainingResource, base_llm: LLMResource,
                    sandbox: SandboxResource, sft_checkpoint: Checkpoint, rl_prompts: pl.DataFrame
                    ) -> dg.Output[TrainedModel]:
    """GRPO from the SFT checkpoint (or the base: training.grpo.start) on a seeded sample of the
    RL prompts, rewarded by their verifiers in the sandbox; rewards, KL, pass rates and the
    trip-wire per step as plots."""
    cfg = training.grpo
    if cfg.drop_probes:
        rl_prompts = rl_prompts.filter(~pl.col("probe"))
        if rl_prompts.is_empty():
            raise method.TrainingDataError("GRPO: every RL prompt is a trip-wire prompt (a non-answer earns its "
                                           "reward) and training.grpo.drop_probes is set: nothing left to train on")
    ids = rl_prompts["prompt_id"].to_list()
    chosen = set(sample_for("grpo", ids, cfg.prompts or len(ids), training.seed))
    prompts = rl_prompts.filter(pl.col("prompt_id").is_in(sorted(chosen))).sort("prompt_id")
    rows = method.grpo_rows(prompts.to_dicts())  # no prompt or no verifier fails here, before a model loads
    start = starting_checkpoint(sft_checkpoint, cfg.start, base_llm, "training.grpo.start")
    shutdown_engines()
    reward = VerifierReward(sandbox)
    trained = training.train_grpo(rows, base=base_llm.model, start=start, data_version=frame_version(prompts),
                                  reward=reward, log=context.log)
    history = trained.manifest["log_history"]
    counts = dict(reward.counts)
    trained.manifest["rewards"] = counts
    tripwire = method.loss_curve(history, "tripwire/degenerate_rewarded")
    over = [(step, share) for step, share in tripwire if share > cfg.tripwire_warn]
    plots = {
        "reward_curve": curves({label: method.loss_curve(history, key) for key, label in REWARD_CURVES.items()},
                               "GRPO: verifier rewards per step", "reward"),
        "kl_curve": curves({"KL to the starting policy": method.loss_curve(history, "kl")}, "GRPO: KL", "KL"),
        "tripwire_curve": curves({"degenerate share of rewarded trip-wire answers": tripwire},
                                 f"GRPO trip-wire (warns above {cfg.tripwire_warn})", "share"),
    }
    steps = [{"step": e["step"], **{k: round(float(e[k]), 3) for k in ("reward", "reward_std", "kl",
                                                                         "completions/mean_length")
                                    if k in e}} for e in history if "reward" in e]
    return checkpoint_output(trained, {
        "prompts": len(rows), "probe_prompts": sum(r["probe"] for r in rows),
        "samples_per_prompt": cfg.samples_per_prompt,
        "answers_judged": counts.get("judged", 0), "answers_cut_off": counts.get("truncated", 0),
        "verifier_errors": dg.MetadataValue.json({k.split(":", 1)[1]: v for k, v in counts.items()
                                                  if k.startswith("error:")}),
        "tripwire_steps_over": len(over), **plots,
        "steps_table": dg.MetadataValue.md(md_table(steps, ["step", "reward", "reward_std", "kl",
                                                            "completions/mean_length"])),
    })
