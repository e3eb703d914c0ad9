"""The SFT and DPO checkpoints trained on the default run's real data, and what training costs here.

Replays the recorded default run (tests/fixtures/default_run.jsonl.gz: its completions, with
the local sandbox; no engine) into a fresh home for the real `sft_dataset` and `dpo_pairs`,
then materializes `sft_checkpoint` and `dpo_checkpoint` (the train job's assets) on the base
model with the training config given (default: the demo's, LoRA), and prints rows, steps,
seconds per step, first/last/mean loss, the DPO reward accuracy and margin, and the peak RSS.

    .venv/bin/python benchmarks/bench_training.py [--full] [--epochs N] [--max-steps N] [--base MODEL]
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from autoif_dagster.home import Home


def replay(home: Path) -> dict:
    """The default run's data assets, from its recording, in `home`; the resources it used."""
    from autoif_dagster.definitions import all_assets
    from autoif_dagster.replay import replay_resources
    from autoif_dagster.resources.sandbox import SandboxResource
    from autoif_dagster.rounds import FIRST_ROUND

    resources = replay_resources(home, SandboxResource(backend="local", timeout_s=2.0))
    result = dg.materialize(all_assets, partition_key=FIRST_ROUND, resources=resources)
    assert result.success
    return resources


def main() -> int:
    from autoif_dagster.definitions import all_assets, training_assets
    from autoif_dagster.resources.checkpoints import CheckpointIOManager
    from autoif_dagster.resources.gpu import GPUResource
    from autoif_dagster.resources.llm import LLMResource
    from autoif_dagster.resources.models import DEFAULT_BASE
    from autoif_dagster.resources.training import DPOPhase, LoRA, SFTPhase, TrainingResource

    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="a whole-model fine-tune instead of LoRA")
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--base", default=DEFAULT_BASE)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="autoif-train-"))
    start = time.perf_counter()
    resources = replay(home)
    print(f"replayed the default run's data in {time.perf_counter() - start:.0f} s ({home})", flush=True)
    # a whole fine-tune at LoRA's learning rates would wreck the model: the usual full-FT ones then
    update = {"max_steps": args.max_steps, **({"epochs": args.epochs} if args.epochs else {})}
    lr = {"sft": 2e-5, "dpo": 1e-6} if args.full else {}
    training = TrainingResource(
        gpu=GPUResource(), lora=LoRA(enabled=not args.full),
        sft=SFTPhase(**{**SFTPhase().model_dump(), **update, **({"learning_rate": lr["sft"]} if lr else {})}),
        dpo=DPOPhase(**{**DPOPhase().model_dump(), **update, **({"learning_rate": lr["dpo"]} if lr else {})}),
    )
    resources = {**resources, "training": training,
                 "base_llm": LLMResource(model=args.base, backend="replay", ledger_path=str(Home(home).ledger)),
                 "checkpoint_io_manager": CheckpointIOManager(base_dir=str(Home(home).checkpoints))}
    start = time.perf_counter()
    # only these two (the train job may hold more); the data assets are there to be loaded
    # (from home/assets), not materialized again
    result = dg.materialize([*training_assets, *all_assets],
                            selection=dg.AssetSelection.assets("sft_checkpoint", "dpo_checkpoint"), resources=resources)
    wall = time.perf_counter() - start
    assert result.success
    print(f"\n=== {args.base}, {'full fine-tune' if args.full else 'LoRA'}: both checkpoints in {wall:.0f} s, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB ===")
    for event in result.get_asset_materialization_events():
        m = event.event_specific_data.materialization
        meta = {k: v.value for k, v in m.metadata.items()}
        extra = (f", reward accuracy {meta['rewards/accuracies']:.2f}, margin {meta['rewards/margins']:.3f}"
                 if "rewards/margins" in meta else "")
        print(f"{m.asset_key.to_user_string()}: {meta['rows']} rows, {meta['steps']} steps, {meta['wall_seconds']} s "
              f"({meta['seconds_per_step']} s/step), loss {meta['first_loss']:.3f} -> {meta['last_loss']:.3f} "
              f"(mean {meta['train_loss']:.3f}){extra}; {meta['checkpoint_bytes'] / 2**20:.1f} MiB at {meta['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
