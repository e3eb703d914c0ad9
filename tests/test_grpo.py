"""GRPO with the verifiers as the reward: the reward's rules (rewards.py), a policy that learns
what a verifier asks, and the checkpoint asset with its trip-wire, through Dagster."""

import logging
import string

import dagster as dg
import polars as pl
import pytest

from autoif_dagster.assets.grpo import grpo_checkpoint
from autoif_dagster.assets.training import sft_checkpoint
from autoif_dagster.method import training as method
from autoif_dagster.method.training import TrainingDataError
from autoif_dagster.resources.checkpoints import CheckpointIOManager, latest_checkpoint
from autoif_dagster.resources.gpu import GPUResource
from autoif_dagster.resources.io_manager import ParquetIOManager
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.sandbox import SandboxResource
from autoif_dagster.resources.training import GRPOPhase, LoRA, TrainingResource
from autoif_dagster.rewards import RewardError, VerifierReward, degenerate, probes, tripwire
from autoif_dagster.versions import output

from .rounds import frame

LOWERCASE = "def evaluate(response):\n    return response.strip() != '' and response == response.lower()\n"
SHORT = "def evaluate(response):\n    return len(response.split()) < 50\n"  # a non-answer passes it
BECAUSE = "def evaluate(response):\n    return 'because' in response.lower()\n"
RAISES = "def evaluate(response):\n    raise ValueError('no')\n"
SLOW = "def evaluate(response):\n    while True:\n        pass\n"


@pytest.fixture(scope="module")
def sandbox():
    return SandboxResource(backend="local", timeout_s=1.0)


@pytest.fixture(scope="module")
def char_base(tmp_path_factory):
    """A 2-layer Llama with random weights over a 39-character vocabulary (lowercase, eight
    capitals, space, full stop) and its end token: a random answer ends within 16 tokens about
    half the time and is often lowercase, so a lowercase verifier gives a reward to learn from
    (over a 49K-token vocabulary no random answer ever ends)."""
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = string.ascii_lowercase + "ABCDEFGH" + " ."
    inner = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    inner.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=inner, eos_token="<end>", pad_token="<pad>",
                                        bos_token="<start>")
    tokenizer.chat_template = ("{% for m in messages %}<start>{{ m['content'] }}<end>{% endfor %}"
                               "{% if add_generation_prompt %}<start>{% endif %}")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("char") / "char-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def rl_rows(verifier: str, n: int = 8, probe: bool = False) -> list[dict]:
    return [{"prompt_id": f"prm-{i}", "instruction_id": "ins-1", "instruction": "Answer in lowercase.",
             "query": f"Say something about {topic}.", "prompt": f"Say something about {topic}. Answer in lowercase.",
             "verifier_ids": ["ver-1"], "verifiers": [verifier], "verifier_accuracy": [1.0], "probe": probe}
            for i, topic in enumerate(["cats", "rain", "tea", "maps", "bread", "snow", "boats", "songs"][:n])]


def grpo_training(steps: int, lora: bool = False, **phase) -> TrainingResource:
    """A full fine-tune at a learning rate where the random model learns in a few dozen steps
    (a LoRA adapter on random weights barely moved it: KL ~0.02 after 40 steps)."""
    settings = {"learning_rate": 1e-2, "max_steps": steps, "batch_size": 32, "micro_batch_size": 32,
                "samples_per_prompt": 8, "max_completion_length": 16, "start": "base", **phase}
    return TrainingResource(gpu=GPUResource(), lora=LoRA(enabled=lora), warmup_ratio=0.0, lr_scheduler="constant",
                            grpo=GRPOPhase(**settings))


# --- the reward ------------------------------------------------------------------------------------


def test_the_reward_is_the_pass_rate_with_errors_failing_and_cut_answers_zero(sandbox):
    reward = VerifierReward(sandbox, eos_token_ids=[0])
    logged = {}
    rewards = reward(completions=["all lowercase", [{"role": "assistant", "content": "Capital"}], "cut short", ""],
                     verifiers=[[LOWERCASE, RAISES], [LOWERCASE], [LOWERCASE], [SLOW, LOWERCASE]],
                     completion_ids=[[5, 0], [5, 0], [5, 6], [0]], probe=[False, False, False, True],
                     log_metric=logged.__setitem__)
    assert rewards == [0.5, 0.0, 0.0, 0.0]  # a raising verifier fails its half; the cut answer is not judged
    assert reward.counts["truncated"] == 1 and reward.counts["judged"] == 3
    assert reward.counts["error:exception"] == 1 and reward.counts["error:timeout"] == 1
    assert logged["reward/truncated"] == 0.25 and logged["pass/all_verifiers"] == 0.0
    assert "tripwire/degenerate_rewarded" not in logged  # no probe answer was rewarded


def test_a_batch_the_reward_cannot_score_is_a_clear_error(sandbox):
    reward = VerifierReward(sandbox)
    with pytest.raises(RewardError, match="empty reward batch"):
        reward.score([], [])
    with pytest.raises(RewardError, match="completion 1 has no verifiers"):
        reward.score(["a", "b"], [[LOWERCASE], []])
    with pytest.raises(TrainingDataError, match="rl_prompts row prm-0: no verifier"):
        method.grpo_rows([{**rl_rows(LOWERCASE)[0], "verifiers": []}])
    with pytest.raises(TrainingDataError, match="rl_prompts has no rows"):
        method.grpo_rows([])


def test_the_tripwire_finds_verifiers_a_non_answer_passes_and_watches_their_rewards(sandbox):
    # "ok" is lowercase: an answer-less policy earns a lowercase verifier's reward too
    assert probes([[SHORT], [LOWERCASE], [BECAUSE], [SHORT, BECAUSE]], sandbox) == [True, True, False, False]
    assert [degenerate(t) for t in ("", "ok ok", "yes " * 30, "The cat sat on the warm mat today.")] == [
        True, True, True, False]
    texts = ["", "a full answer with words enough to count", "no", "x"]
    assert tripwire(texts, [1.0, 1.0, 1.0, 0.0], [True, True, True, True]) == pytest.approx(2 / 3)
    assert tripwire(texts, [0.0, 0.0, 0.0, 0.0], [True] * 4) is None


# --- learning --------------------------------------------------------------------------------------


def test_grpo_raises_the_reward_of_a_verifier_the_policy_can_learn(char_base, sandbox):
    """Lowercase answers that end: about one in ten of the random policy's at first."""
    rows = method.grpo_rows(rl_rows(LOWERCASE))
    trained = grpo_training(steps=16).train_grpo(rows, base=char_base, start=None, data_version="v",
                                                 reward=VerifierReward(sandbox))
    rewards = [v for _, v in method.loss_curve(trained.manifest["log_history"], "reward")]
    assert len(rewards) == 16
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.25, rewards
    assert trained.manifest["kind"] == "grpo" and trained.manifest["data"]["asset"] == "rl_prompts"


# --- through Dagster -------------------------------------------------------------------------------


def stand_ins(rows: list[dict]) -> list[dg.AssetsDefinition]:
    """The RL prompts, and SFT data in the characters the model knows."""
    sft = [{"sample_id": f"sft-{i}", "prompt_id": r["prompt_id"], "response_id": f"resp-{i}",
            "instruction_id": r["instruction_id"], "query_id": f"qry-{i}", "pass_rate": 1.0, "score": 9,
            "messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": "a short answer."}]}
           for i, r in enumerate(rows)]

    @dg.asset(name="rl_prompts")
    def prompts() -> dg.Output[pl.DataFrame]:
        return output(frame("rl_prompts", rows), {})

    @dg.asset(name="sft_dataset")
    def sft_data() -> dg.Output[pl.DataFrame]:
        return output(frame("sft_dataset", sft), {})

    return [prompts, sft_data]


def materialize_grpo(rows: list[dict], base: str, sandbox, tmp_path, **phase):
    """rl_prompts and SFT data stand-ins, a real SFT checkpoint (one step), then grpo_checkpoint:
    the result, and the warnings it logged."""
    instance = dg.DagsterInstance.ephemeral()
    settings = {"steps": 2, "batch_size": 16, "micro_batch_size": 16, "prompts": 2, "start": "sft", **phase}
    result = dg.materialize(
        [*stand_ins(rows), sft_checkpoint, grpo_checkpoint], instance=instance, raise_on_error=False,
        resources={"training": grpo_training(**settings), "base_llm": LLMResource(model=base), "sandbox": sandbox,
                   "io_manager": ParquetIOManager(base_dir=str(tmp_path / "assets")),
                   "checkpoint_io_manager": CheckpointIOManager(base_dir=str(tmp_path / "checkpoints"))})
    return result, [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]


def test_the_checkpoint_asset_trains_on_rl_prompts_and_warns_when_non_answers_earn_the_reward(
        char_base, sandbox, tmp_path):
    result, warnings = materialize_grpo(rl_rows(SHORT, n=4, probe=True), char_base, sandbox, tmp_path)
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("grpo_checkpoint")[0].metadata.items()}
    assert (meta["prompts"], meta["probe_prompts"], meta["steps"]) == (2, 2, 2)
    assert meta["answers_judged"] + meta["answers_cut_off"] == 32
    # the random policy's answers are a few letters: every rewarded one is a non-answer
    assert meta["tripwire_steps_over"] >= 1
    assert any("trip-wire prompts are degenerate" in w for w in warnings)
    for plot in ("reward_curve", "kl_curve", "tripwire_curve", "loss_curve"):
        assert meta[plot].startswith("![")
    checkpoint = latest_checkpoint(tmp_path / "checkpoints" / "grpo_checkpoint", "grpo_checkpoint")
    assert checkpoint.manifest["kind"] == "grpo" and checkpoint.manifest["start"]["from"] == "sft_checkpoint"
    assert checkpoint.manifest["data"]["rows"] == 2
    assert checkpoint.manifest["rewards"]["completions"] == 32


def test_grpo_without_trip_wire_prompts_trains_on_the_rest_or_says_none_is_left(char_base, sandbox, tmp_path):
    rest = [{**r, "prompt_id": f"prm-x{i}"} for i, r in enumerate(rl_rows(LOWERCASE, n=2))]
    result, _ = materialize_grpo([*rl_rows(SHORT, n=2, probe=True), *rest], char_base, sandbox, tmp_path,
                                 steps=1, drop_probes=True)
    assert result.success
    checkpoint = latest_checkpoint(tmp_path / "checkpoints" / "grpo_checkpoint", "grpo_checkpoint")
    assert sorted(checkpoint.manifest["data"]["ids"]) == ["prm-x0", "prm-x1"]
    result, _ = materialize_grpo(rl_rows(SHORT, n=2, probe=True), char_base, sandbox, tmp_path / "again", steps=1,
                                 drop_probes=True)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "every RL prompt is a trip-wire prompt" in failure.step_failure_data.error.cause.message
