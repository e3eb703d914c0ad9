"""Training (issue #10): SFT and offline-DPO checkpoints trained with TRL, written whole or not
at all, reloaded and generating.

Unit tests train a tiny Llama built from a config (random weights, the embedded SmolLM2's
tokenizer) for a few steps on data it can learn at a high learning rate, and assert what
training must have done: the SFT answer became likelier, DPO moved the chosen answer ahead of
the rejected one. One integration test trains the real embedded SmolLM2 through Dagster."""

import json
import math
import subprocess
import sys
import textwrap

import dagster as dg
import polars as pl
import pytest

from autoif_dagster.assets.training import dpo_checkpoint, sft_checkpoint
from autoif_dagster.definitions import training_assets
from autoif_dagster.method import exports
from autoif_dagster.method import training as method
from autoif_dagster.resources.checkpoints import (
    LATEST,
    Checkpoint,
    MANIFEST,
    CheckpointError,
    CheckpointIOManager,
    TrainedModel,
    latest_checkpoint,
    load_causal_lm,
    load_model,
    read_checkpoint,
    write_checkpoint,
)
from autoif_dagster.resources.gpu import GPUError, GPUResource, visible_gpus
from autoif_dagster.resources.io_manager import ParquetIOManager
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.models import SMOKE_MODEL, resolve_model
from autoif_dagster.resources.training import DPOPhase, LoRA, SFTPhase, TrainingResource
from autoif_dagster.versions import output

from .rounds import frame

ANSWER, WRONG = "OK DONE", "ok done"
SFT = [{"sample_id": f"sft-{i}", "prompt_id": f"prm-{i}", "response_id": f"resp-{i}", "instruction_id": "ins-1",
        "query_id": f"qry-{i}", "pass_rate": 1.0, "score": 9,
        "messages": [{"role": "user", "content": f"Question {i}? Answer in capitals."},
                     {"role": "assistant", "content": ANSWER}]} for i in range(4)]
PAIRS = [{"pair_id": f"pair-{i}", "prompt_id": f"prm-{i}", "chosen_response_id": f"resp-{i}",
          "rejected_response_id": f"resp-x{i}", "prompt": f"Question {i}? Answer in capitals.", "chosen": ANSWER,
          "rejected": WRONG, "chosen_pass_rate": 1.0, "rejected_pass_rate": 0.0,
          "rejected_with_instruction": True} for i in range(4)]
HELD_OUT = [{"role": "user", "content": "Question 9? Answer in capitals."}]  # a prompt not trained on


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A 2-layer Llama with random weights and SmolLM2's tokenizer and chat template. Weights
    10x the usual init: at 0.02 its logits are near-uniform and out of a LoRA adapter's reach."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(SMOKE_MODEL))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         initializer_range=0.2)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def trainer(lora: bool, steps: int = 5) -> TrainingResource:
    """Learning rates at which a tiny random model learns a fixed answer in a few steps (no
    warm-up: every step counts)."""
    lr = 2e-2 if lora else 5e-3
    return TrainingResource(gpu=GPUResource(), lora=LoRA(enabled=lora, r=8, alpha=16), warmup_ratio=0.0,
                            sft=SFTPhase(learning_rate=lr, max_steps=steps, batch_size=4, micro_batch_size=4),
                            dpo=DPOPhase(learning_rate=lr, max_steps=steps, batch_size=4, micro_batch_size=4))


def answer_logprob(model, tokenizer, prompt: list[dict], answer: str) -> float:
    """log p(answer | prompt) under the chat template."""
    import torch

    context = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(context + answer, return_tensors="pt", add_special_tokens=False).input_ids
    start = len(tokenizer(context, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].log_softmax(-1)
    targets = ids[0, 1:]
    return float(logits[start - 1:].gather(1, targets[start - 1:, None]).sum())


def generate(model, tokenizer, prompt: list[dict], tokens: int = 6) -> str:
    inputs = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)


# --- the data as TRL reads it ---------------------------------------------------------------------


def test_rows_are_the_exports_turns_split_for_a_loss_on_the_answer():
    rows = method.sft_rows(SFT)
    assert rows[0] == {"prompt": SFT[0]["messages"][:1], "completion": SFT[0]["messages"][1:], "id": "sft-0"}
    assert method.dpo_rows(PAIRS) == exports.dpo_messages(PAIRS)  # the same rows the exports write
    trained, ids = method.without_ids(rows)
    assert ids == ["sft-0", "sft-1", "sft-2", "sft-3"] and all("id" not in r for r in trained)


@pytest.mark.parametrize("rows, error", [
    ([], "sft_dataset has no rows"),
    ([{**SFT[0], "messages": SFT[0]["messages"][:1]}], "sft_dataset row sft-0: needs user turn"),
    ([{**SFT[0], "messages": [SFT[0]["messages"][0], {"role": "assistant", "content": "  "}]}], "row sft-0"),
    ([{**SFT[0], "messages": [{"role": "user", "content": ""}, SFT[0]["messages"][1]]}], "prompt is empty"),
])
def test_sft_data_that_cannot_be_trained_on_is_an_error_naming_the_row(rows, error):
    with pytest.raises(method.TrainingDataError, match=error):
        method.sft_rows(rows)


@pytest.mark.parametrize("rows, error", [
    ([], "dpo_pairs has no rows"),
    ([{**PAIRS[0], "rejected": ANSWER}], "pair-0: chosen and rejected are the same"),
    ([{**PAIRS[0], "chosen": ""}], "pair-0: its chosen is empty"),
])
def test_dpo_data_that_cannot_be_trained_on_is_an_error_naming_the_pair(rows, error):
    with pytest.raises(method.TrainingDataError, match=error):
        method.dpo_rows(rows)


def test_the_papers_hyperparameters_sit_beside_the_demos():
    paper, demo = TrainingResource.paper(gpu=GPUResource()), TrainingResource(gpu=GPUResource())
    assert (paper.sft.learning_rate, paper.sft.epochs, paper.sft.batch_size, paper.sft.max_length) == (7e-6, 3, 128, 8192)
    assert (paper.dpo.learning_rate, paper.dpo.beta, paper.dpo.epochs, paper.dpo.batch_size,
            paper.dpo.max_length) == (5e-7, 0.3, 2, 64, 4096)
    assert not paper.lora.enabled and demo.lora.enabled
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        SFTPhase(batch_size=6, micro_batch_size=4)


# --- training, reloading, generating ------------------------------------------------------------


# every way a DPO checkpoint stands on an SFT one: the same adapter trained on, a new adapter on
# a whole model, an adapter folded into a whole model (so SFT and DPO each run whole and LoRA)
@pytest.mark.parametrize("sft_lora, dpo_lora", [(True, True), (False, True), (True, False)],
                         ids=["lora-lora", "full-then-lora", "lora-then-full"])
def test_sft_then_dpo_train_reload_and_generate(tiny_base, tmp_path, sft_lora, dpo_lora):
    from transformers import AutoTokenizer

    base_model, tokenizer = load_causal_lm(tiny_base), AutoTokenizer.from_pretrained(tiny_base)
    base_logprob = answer_logprob(base_model, tokenizer, HELD_OUT, ANSWER)

    trained = trainer(sft_lora).train_sft(method.sft_rows(SFT), tiny_base, data_version="data-1")
    sft = write_checkpoint(trained, tmp_path / "sft", "one")
    assert read_checkpoint(sft.path).manifest == sft.manifest  # what was written reads back whole
    m = sft.manifest
    assert (m["kind"], m["adapter"], m["base_model"], m["start"]["from"]) == (
        "sft", "lora" if sft_lora else "full", tiny_base, "base")
    assert m["data"] == {"asset": "sft_dataset", "data_version": "data-1", "rows": 4, "ids": [r["sample_id"] for r in SFT]}
    assert m["metrics"]["steps"] == 5 and m["metrics"]["last_loss"] < m["metrics"]["first_loss"]
    assert m["hyperparameters"]["max_steps"] == 5 and m["hyperparameters"]["lora"] == (
        {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": None} if sft_lora else None)
    assert ("adapter_config.json" in m["files"]) == sft_lora and ("model.safetensors" in m["files"]) != sft_lora
    assert sft.serving() == ({"model": tiny_base, "lora": str(sft.path)} if sft_lora
                             else {"model": str(sft.path), "lora": None})
    model, tokenizer = load_model(sft)
    sft_logprob = answer_logprob(model, tokenizer, HELD_OUT, ANSWER)
    assert sft_logprob > base_logprob + 5  # the answer it was taught, on a prompt it never saw
    assert generate(model, tokenizer, HELD_OUT).strip()
    margin_before = (sft_logprob - answer_logprob(model, tokenizer, HELD_OUT, WRONG))

    trained = trainer(dpo_lora).train_dpo(method.dpo_rows(PAIRS), tiny_base, start=sft, data_version="data-2")
    dpo = write_checkpoint(trained, tmp_path / "dpo", "one")
    m = dpo.manifest
    assert (m["kind"], m["adapter"], m["start"]["from"], m["start"]["version"]) == (
        "dpo", "lora" if dpo_lora else "full", "sft_checkpoint", sft.version)
    # an adapter trained on goes on the SFT adapter's base; a new one on the whole SFT model
    assert m["adapter_base"] == (None if not dpo_lora else tiny_base if sft_lora else str(sft.path))
    assert m["metrics"]["rewards/accuracies"] == 1.0 and m["data"]["ids"] == [p["pair_id"] for p in PAIRS]
    model, tokenizer = load_model(dpo)
    margin_after = answer_logprob(model, tokenizer, HELD_OUT, ANSWER) - answer_logprob(model, tokenizer, HELD_OUT, WRONG)
    assert margin_after > margin_before + 1  # the chosen answer moved ahead of the rejected one
    assert generate(model, tokenizer, HELD_OUT).strip()


def test_dpo_from_the_base_starts_from_the_base(tiny_base, tmp_path):
    trained = trainer(True, steps=2).train_dpo(method.dpo_rows(PAIRS), tiny_base, start=None, data_version="d")
    assert trained.manifest["start"] == {"from": "base", "checkpoint": None}
    assert trained.manifest["adapter_base"] == tiny_base


# --- bad input: clear errors ----------------------------------------------------------------------


def test_a_gpu_configured_but_absent_is_a_clear_error(tiny_base):
    missing = max(visible_gpus(), default=6) + 1  # a device this machine does not have, GPUs or not
    training = TrainingResource(gpu=GPUResource(devices=[missing]))
    with pytest.raises(GPUError, match=rf"gpu.devices names GPU \[{missing}\] for sft training"):
        training.train_sft(method.sft_rows(SFT), tiny_base, data_version="d")


def test_a_base_model_that_cannot_load_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))  # no weights, no tokenizer
    with pytest.raises(CheckpointError, match=f"could not load model '{broken}'"):
        trainer(True).train_sft(method.sft_rows(SFT), str(broken), data_version="d")


def test_an_empty_dataset_fails_before_a_model_loads(tmp_path):
    base = LLMResource(model=str(tmp_path / "no-such-model"))  # never loaded: the data is checked first
    never_read = Checkpoint(path=tmp_path / "no-such-checkpoint", manifest={})
    with dg.build_asset_context() as context, pytest.raises(method.TrainingDataError, match="sft_dataset has no rows"):
        sft_checkpoint(context, trainer(True), base, frame("sft_dataset", []))
    with dg.build_asset_context() as context, pytest.raises(method.TrainingDataError, match="dpo_pairs has no rows"):
        dpo_checkpoint(context, trainer(True), base, frame("dpo_pairs", []), never_read)


# --- written whole or not at all ------------------------------------------------------------------


class FakeModel:
    """Writes a weights file and, on `hang`, never finishes (a run killed mid-write)."""

    def __init__(self, hang: bool = False):
        self.hang = hang

    def save_pretrained(self, directory, **kwargs):
        (directory / "model.safetensors").write_bytes(b"\0" * 1000)
        if self.hang:
            import time

            time.sleep(600)


class FakeTokenizer:
    def save_pretrained(self, directory):
        (directory / "tokenizer.json").write_text("{}")


def fake(hang: bool = False) -> TrainedModel:
    return TrainedModel(FakeModel(hang), FakeTokenizer(), {"kind": "sft", "version": "v", "adapter": "full"})


def test_a_checkpoint_directory_without_its_manifest_is_refused(tmp_path):
    folder = tmp_path / "sft_checkpoint"
    whole = write_checkpoint(fake(), folder, "first")
    assert latest_checkpoint(folder, "sft_checkpoint").path == whole.path
    half = folder / "second"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match=f"{half} is not a whole checkpoint: it has no {MANIFEST}"):
        read_checkpoint(half)
    (folder / LATEST).write_text("second\n")  # even when named as the newest
    with pytest.raises(CheckpointError, match="not a whole checkpoint"):
        latest_checkpoint(folder, "sft_checkpoint")
    (whole.path / "model.safetensors").write_bytes(b"\0" * 999)  # a file that is not what the manifest lists
    with pytest.raises(CheckpointError, match="model.safetensors does not match the manifest"):
        read_checkpoint(whole.path)
    with pytest.raises(CheckpointError, match="dpo_checkpoint has not been materialized"):
        latest_checkpoint(tmp_path / "dpo_checkpoint", "dpo_checkpoint")


def test_a_run_killed_while_writing_leaves_the_previous_checkpoint_the_newest(tmp_path):
    folder = tmp_path / "sft_checkpoint"
    first = write_checkpoint(fake(), folder, "first")
    script = textwrap.dedent(f"""
        from tests.test_training import fake
        from autoif_dagster.resources.checkpoints import write_checkpoint
        write_checkpoint(fake(hang=True), {str(folder)!r}, "second")
    """)
    from pathlib import Path

    child = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])
    try:
        for _ in range(600):  # until the weights are half written
            staging = [p for p in folder.glob(".second.*.tmp") if (p / "model.safetensors").exists()]
            if staging or child.poll() is not None:
                break
            import time

            time.sleep(0.05)
        assert staging, "the writer never started"
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait()
    assert latest_checkpoint(folder, "sft_checkpoint").path == first.path  # not the half-written one
    assert not (folder / "second").exists()
    write_checkpoint(fake(), folder, "third")  # the next write clears the leftovers
    assert sorted(p.name for p in folder.iterdir()) == [LATEST, "first", "third"]


def test_a_write_that_fails_leaves_nothing(tmp_path):
    folder = tmp_path / "sft_checkpoint"
    first = write_checkpoint(fake(), folder, "first")
    broken = fake()
    broken.tokenizer.save_pretrained = lambda directory: (_ for _ in ()).throw(OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(broken, folder, "second")
    assert sorted(p.name for p in folder.iterdir()) == [LATEST, "first"]
    assert latest_checkpoint(folder, "sft_checkpoint").path == first.path


# --- through Dagster ------------------------------------------------------------------------------


def data_assets(sft_rows: list[dict], pairs: list[dict]) -> list[dg.AssetsDefinition]:
    """Stand-ins for the data assets, versioned by content as the real ones are."""
    @dg.asset(name="sft_dataset")
    def sft_data() -> dg.Output[pl.DataFrame]:
        return output(frame("sft_dataset", sft_rows), {})

    @dg.asset(name="dpo_pairs")
    def dpo_data() -> dg.Output[pl.DataFrame]:
        return output(frame("dpo_pairs", pairs), {})

    return [sft_data, dpo_data]


# the checkpoints trained on the data alone, with their code versions (online DPO: test_online_dpo.py)
OFFLINE = [a for a in training_assets if a.key.to_user_string() in ("sft_checkpoint", "dpo_checkpoint")]


def materialize(tmp_path, base: str, training: TrainingResource, sft_rows=SFT, pairs=PAIRS, keep: int = 2):
    result = dg.materialize(
        [*data_assets(sft_rows, pairs), *OFFLINE],
        resources={"training": training, "base_llm": LLMResource(model=base),
                   "io_manager": ParquetIOManager(base_dir=str(tmp_path / "assets")),
                   "checkpoint_io_manager": CheckpointIOManager(base_dir=str(tmp_path / "checkpoints"), keep=keep)},
    )
    assert result.success
    events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    meta = {name: {k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
            for name, e in events.items()}
    versions = {name: e.event_specific_data.materialization.tags["dagster/data_version"] for name, e in events.items()}
    return meta, versions


def test_the_io_manager_writes_each_materialization_and_keeps_the_newest(tiny_base, tmp_path):
    meta, versions = materialize(tmp_path, tiny_base, trainer(True, steps=2), keep=1)
    sft = latest_checkpoint(tmp_path / "checkpoints" / "sft_checkpoint", "sft_checkpoint")
    dpo = latest_checkpoint(tmp_path / "checkpoints" / "dpo_checkpoint", "dpo_checkpoint")
    # the data version each was trained on is the one Dagster recorded for its input
    assert sft.manifest["data"]["data_version"] == versions["sft_dataset"] == meta["sft_checkpoint"]["data_version"]
    assert dpo.manifest["data"]["data_version"] == versions["dpo_pairs"]
    assert (versions["sft_checkpoint"], versions["dpo_checkpoint"]) == (sft.version, dpo.version)
    assert dpo.manifest["start"]["checkpoint"] == str(sft.path) and meta["dpo_checkpoint"]["start"] == "sft_checkpoint"
    assert meta["sft_checkpoint"]["path"] == str(sft.path)
    assert meta["sft_checkpoint"]["loss_curve"].startswith("![sft training loss](data:image/png;base64,")
    assert meta["dpo_checkpoint"]["reward_curve"].startswith("![DPO implicit rewards](data:image/png;base64,")

    meta, _ = materialize(tmp_path, tiny_base, trainer(True, steps=2), keep=1)  # again: the first is pruned
    assert meta["sft_checkpoint"]["pruned"] == [sft.path.name]
    newest = latest_checkpoint(tmp_path / "checkpoints" / "sft_checkpoint", "sft_checkpoint")
    assert [p.name for p in newest.path.parent.iterdir() if p.is_dir()] == [newest.path.name]


def test_dpo_refuses_an_sft_checkpoint_of_another_base(tiny_base, tmp_path):
    materialize(tmp_path, tiny_base, trainer(True, steps=1))
    sft = latest_checkpoint(tmp_path / "checkpoints" / "sft_checkpoint", "sft_checkpoint")
    with dg.build_asset_context() as context, pytest.raises(
            CheckpointError, match="was trained from .*, but base_llm is 'smollm2-135m-instruct'"):
        dpo_checkpoint(context, trainer(True), LLMResource(model=SMOKE_MODEL), frame("dpo_pairs", PAIRS), sft)


# --- the real embedded model ----------------------------------------------------------------------

REAL_SFT = [
    {**SFT[0], "sample_id": f"sft-real-{i}", "messages": [
        {"role": "user", "content": f"{q}\n\nAnswer in exactly three bullet points."},
        {"role": "assistant", "content": a}]}
    for i, (q, a) in enumerate([
        ("How do I make a good cup of coffee at home?",
         "- Use freshly ground beans.\n- Keep the water just off the boil.\n- Brew for about four minutes."),
        ("Why is the sky blue during the day?",
         "- Sunlight holds every colour.\n- Air scatters blue light most.\n- So blue reaches us from all directions."),
        ("What should I pack for a weekend hiking trip?",
         "- Water and snacks.\n- A rain jacket.\n- A map and a charged phone."),
        ("How can I improve my sleep schedule?",
         "- Go to bed at the same time.\n- Avoid screens late at night.\n- Get daylight in the morning."),
    ])
]
REAL_PAIRS = [{**PAIRS[0], "pair_id": f"pair-real-{i}", "prompt": r["messages"][0]["content"],
               "chosen": r["messages"][1]["content"],
               "rejected": r["messages"][1]["content"].replace("- ", "").replace("\n", " ")}
              for i, r in enumerate(REAL_SFT)]


def test_the_embedded_model_trains_both_checkpoints_through_dagster(tmp_path):
    """SmolLM2-135M-Instruct with the demo's LoRA settings, two steps of each (no warm-up, so
    both update): the chain is real, and each checkpoint reloads on its base and generates."""
    from safetensors.torch import load_file

    training = TrainingResource(gpu=GPUResource(), warmup_ratio=0.0,
                                sft=SFTPhase(max_steps=2, batch_size=2, micro_batch_size=2),
                                dpo=DPOPhase(max_steps=2, batch_size=2, micro_batch_size=2))
    meta, _ = materialize(tmp_path, SMOKE_MODEL, training, sft_rows=REAL_SFT, pairs=REAL_PAIRS)
    sft = latest_checkpoint(tmp_path / "checkpoints" / "sft_checkpoint", "sft_checkpoint")
    dpo = latest_checkpoint(tmp_path / "checkpoints" / "dpo_checkpoint", "dpo_checkpoint")
    adapters = {}
    for checkpoint in (sft, dpo):
        m = checkpoint.manifest
        assert (m["base_model"], m["adapter"], m["adapter_base"], m["metrics"]["steps"]) == (
            SMOKE_MODEL, "lora", SMOKE_MODEL, 2)
        assert all(math.isfinite(v) for _, v in method.loss_curve(m["log_history"]))
        assert checkpoint.serving() == {"model": SMOKE_MODEL, "lora": str(checkpoint.path)}
        adapters[m["kind"]] = load_file(checkpoint.path / "adapter_model.safetensors")
        model, tokenizer = load_model(checkpoint)
        assert generate(model, tokenizer, REAL_SFT[0]["messages"][:1], tokens=12).strip()
    # LoRA's B matrices start at zero: SFT moved them, and DPO moved them on from there
    assert any(bool(t.abs().sum()) for name, t in adapters["sft"].items() if "lora_B" in name)
    assert adapters["dpo"].keys() == adapters["sft"].keys()
    assert any(not t.equal(adapters["sft"][name]) for name, t in adapters["dpo"].items())
    assert dpo.manifest["start"]["version"] == sft.version
    print({name: {k: meta[name][k] for k in ("steps", "seconds_per_step", "first_loss", "last_loss")} for name in meta
           if name.endswith("checkpoint")})
