"""Online DPO (issue #10): the policy samples, the sandbox judges, the method's rule pairs, a
DPO step trains, N times; and a checkpoint scored on IFEval beside its base.

The integration test runs the real chain on the embedded SmolLM2: an SFT step, then two online
iterations whose policy is served by the real engine (the second from the first's checkpoint)
and judged by the real sandbox, then the online checkpoint's IFEval answers scored beside the
base's. Its verifier passes answers of even length: a coin that every prompt's five answers
split with near certainty, so that each iteration has pairs to train on."""

import json

import dagster as dg
import polars as pl
import pytest

from autoif_dagster.assets.evaluation import (base_benchmark_scores, benchmark_prompts, checkpoint_benchmark_scores,
                                              covered_instruction_types)
from autoif_dagster.assets.online_dpo import iteration_pairs, online_dpo_checkpoint, sampling_plan
from autoif_dagster.assets.training import sft_checkpoint
from autoif_dagster.config import AutoIFConfig, EvaluationConfig
from autoif_dagster.resources.checkpoints import CheckpointIOManager, latest_checkpoint, read_checkpoint
from autoif_dagster.resources.gpu import GPUResource
from autoif_dagster.resources.io_manager import ParquetIOManager
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.models import SMOKE_MODEL
from autoif_dagster.resources.training import OnlinePhase, SFTPhase, TrainingResource
from autoif_dagster.versions import output

from .rounds import frame

EVEN = "def evaluate(response):\n    return len(response) % 2 == 0\n"


def answer(prompt_id: str, answer_id: str, rate: float, with_instruction: bool = True) -> dict:
    return {"answer_id": answer_id, "prompt_id": prompt_id, "prompt": f"prompt {prompt_id}", "pass_rate": rate,
            "response": f"text of {answer_id}", "with_instruction": with_instruction}


def test_iteration_pairs_follow_the_methods_rule():
    answers = [answer("p1", "a", 1.0), answer("p1", "b", 0.0, False), answer("p1", "c", 0.5), answer("p1", "d", 0.25),
               answer("p2", "e", 1.0), answer("p2", "f", 1.0)]  # p2: nothing fails, no pair
    pairs = iteration_pairs(answers, chosen_min=0.5, rejected_max=0.0, max_pairs=4)
    assert [(p["chosen_response_id"], p["rejected_response_id"]) for p in pairs] == [("a", "b"), ("c", "b")]
    assert pairs[0]["chosen"] == "text of a" and pairs[0]["rejected"] == "text of b"
    assert pairs[0]["prompt"] == "prompt p1" and pairs[0]["rejected_with_instruction"] is False
    assert iteration_pairs(answers, chosen_min=0.5, rejected_max=0.0, max_pairs=1)[0]["chosen_response_id"] == "a"


def test_sampling_plan_asks_each_prompt_k_times_and_its_query_alone():
    plan = sampling_plan([{"prompt": "Q. Be brief.", "query": "Q."}], samples=2, query_only=1)
    assert [(k, turn) for _, k, turn in plan] == [(0, "Q. Be brief."), (1, "Q. Be brief."), (2, "Q.")]


QUERIES = ["How do I make a good cup of coffee at home?", "Why is the sky blue during the day?",
           "What should I pack for a weekend hiking trip?", "How can I improve my sleep schedule?"]


def stand_ins() -> list[dg.AssetsDefinition]:
    """The data the training assets read, as the autoif job would leave it (one round)."""
    prompts = [{"prompt_id": f"prm-{i}", "instruction_id": "ins-short", "query_id": f"qry-{i}",
                "instruction": "Answer in one sentence.", "query": q, "prompt": f"{q}\n\nAnswer in one sentence."}
               for i, q in enumerate(QUERIES)]
    sft = [{"sample_id": f"sft-{i}", "prompt_id": p["prompt_id"], "response_id": f"resp-{i}",
            "instruction_id": "ins-short", "query_id": p["query_id"], "pass_rate": 1.0, "score": 9,
            "messages": [{"role": "user", "content": p["prompt"]},
                         {"role": "assistant", "content": "Here is a short answer in one sentence."}]}
           for i, p in enumerate(prompts)]
    frames = {"instruction_prompts": frame("instruction_prompts", prompts),
              "verifiers": frame("verifiers", [{"verifier_id": "ver-even", "instruction_id": "ins-short",
                                                "candidate_ids": [], "func": EVEN, "accuracy": 1.0}]),
              "sft_dataset": frame("sft_dataset", sft),
              "seed_instructions": frame("seed_instructions", [{
                  "instruction_id": "ins-short", "instruction": "Answer in one sentence.",
                  "reference": json.dumps({"benchmark": "ifeval", "checker": "change_case:english_lowercase",
                                           "kwargs": {}})}])}

    def stand_in(name: str) -> dg.AssetsDefinition:
        @dg.asset(name=name)
        def made() -> dg.Output[pl.DataFrame]:
            return output(frames[name], {})

        return made

    return [stand_in(name) for name in frames]


@pytest.mark.engine
def test_online_dpo_trains_on_its_own_judged_samples_and_is_scored_beside_the_base(tmp_path, sandbox):
    prompts_file = tmp_path / "ifeval.jsonl"
    prompts_file.write_text("\n".join(json.dumps(p) for p in [
        {"key": 1, "prompt": "Write two sentences about tea, all in lowercase letters.",
         "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
        {"key": 2, "prompt": "Describe a cat. End your answer with the exact phrase 'Is there anything else?'",
         "instruction_id_list": ["startend:end_checker"], "kwargs": [{"end_phrase": "Is there anything else?"}]},
    ]))
    base = LLMResource(model=SMOKE_MODEL)
    training = TrainingResource(gpu=GPUResource(), warmup_ratio=0.0,
                                sft=SFTPhase(max_steps=1, batch_size=2, micro_batch_size=2),
                                online=OnlinePhase(iterations=2, samples_per_prompt=4, query_only_samples=1,
                                                   max_tokens=96, max_steps=1, batch_size=2, micro_batch_size=2))
    scores = {a.key.to_user_string(): a for a in checkpoint_benchmark_scores}["online_dpo_benchmark_scores"]
    result = dg.materialize(
        [*stand_ins(), sft_checkpoint, online_dpo_checkpoint, benchmark_prompts, base_benchmark_scores,
         covered_instruction_types, scores],
        resources={"autoif": AutoIFConfig(), "training": training, "base_llm": base, "sandbox": sandbox,
                   "evaluation_config": EvaluationConfig(ifeval_path=str(prompts_file), ifbench_prompts=0,
                                                         max_tokens=48),
                   "io_manager": ParquetIOManager(base_dir=str(tmp_path / "assets")),
                   "checkpoint_io_manager": CheckpointIOManager(base_dir=str(tmp_path / "checkpoints"))},
    )
    assert result.success
    online = latest_checkpoint(tmp_path / "checkpoints" / "online_dpo_checkpoint", "online_dpo_checkpoint")
    report = online.manifest["online"]["iterations"]
    assert [r["iteration"] for r in report] == [1, 2] and all(r["pairs"] > 0 for r in report)
    # the second iteration's policy is the first's checkpoint, not the SFT one it started from
    assert report[0]["policy"] != report[1]["policy"] and "+adapter:checkpoint:" in report[1]["policy"]
    folder = tmp_path / "checkpoints" / "online_dpo_checkpoint.iterations"
    for i in (1, 2):
        kept = read_checkpoint(next(folder.glob(f"*/iteration-{i}")))  # whole, with its manifest
        assert kept.manifest["kind"] == "online_dpo" and kept.manifest["online_iteration"] == i
        pairs = pl.read_parquet(next(folder.glob(f"*/iteration-{i}.pairs.parquet")))
        assert pairs.height == report[i - 1]["pairs"]
        # the verifier's verdicts, recomputed: every chosen answer passes it, every rejected one fails
        assert all(len(t) % 2 == 0 for t in pairs["chosen"]) and all(len(t) % 2 == 1 for t in pairs["rejected"])
    assert online.manifest["start"]["from"] == "online_dpo_checkpoint"  # iteration 2 trained on iteration 1's
    scored = pl.read_parquet(tmp_path / "assets" / "online_dpo_benchmark_scores.parquet")
    assert scored.height == 2 and scored["model"].unique().to_list() == [f"{SMOKE_MODEL}+{online.path}"]
    meta = result.asset_materializations_for_node("online_dpo_benchmark_scores")[0].metadata
    assert "| ifeval | prompt_strict |" in meta["against_base"].value
    # the prompt about lowercase is of the type the (stand-in) seed covers
    assert meta["covered/instructions"].value == 1 and meta["rest/instructions"].value == 1
