"""The training data in the formats trainers read: pure functions from our rows to theirs.

- LLaMA-Factory: alpaca (instruction / input / output) and sharegpt (conversations of
  from / value turns) for SFT, the same two with chosen / rejected for preference data, and
  the `dataset_info.json` entries that name them (`ranking: true` marks preference sets).
- Chat `messages` JSONL: TRL's conversational formats (SFT: `messages`; preference: `prompt`,
  `chosen`, `rejected`, each a list of turns).
Each row keeps its id (`sample_id` / `pair_id`), so a trained-on row traces back (`autoif trace`).

The RL prompts (`rl_prompts`: a prompt and its instruction's kept verifiers), for RL with the
verifiers as the reward (rewards.py scores them; docs/using/rlvr.md shows each trainer):
- TRL (`GRPOTrainer`): `prompt` as chat turns, and the columns `rewards.VerifierReward` reads
  (`verifiers`, `probe`) with the ids; TRL passes every extra column to a reward function.
- verl (`RLHFDataset` parquet): `data_source`, `prompt` (turns), `ability`, `reward_model`
  ({"style": "rule", "ground_truth": ...}), `extra_info` (index and ids); verl hands
  `data_source`, the decoded answer, `ground_truth` and `extra_info` to `rewards.compute_score`.
- open-instruct (RLVR, `grpo_fast.py`): `messages` (the prompt turn), `ground_truth` (a string),
  `dataset` (the verifier's name: open-instruct looks its verifier class up by it, lowercased),
  plus RLVR-IFeval's `constraint_type` / `constraint`; `rewards.open_instruct_verifier` defines the
  verifier class for `RLVR_SOURCE`.
`ground_truth` is the same JSON string in verl and open-instruct: {"verifiers": [sources],
"instruction_id": ..., "prompt_id": ...} (`rewards.verifier_sources` reads it back).

Plugging the reward into open-instruct: its `build_all_verifiers` makes one instance of every
direct subclass of `open_instruct.ground_truth_utils.VerifierFunction`, keyed by the instance's
name lowercased, and scores a row with the verifier its `dataset` names. So define ours before
it builds them, in a launcher run in place of grpo_fast.py (same arguments; the export's JSONL as
`--dataset_mixer_list PATH/open_instruct/rl_prompts.jsonl 1.0`):

    from autoif_dagster.rewards import open_instruct_verifier
    open_instruct_verifier()  # the "autoif" verifier: rows whose dataset is "autoif" are scored by it
    import runpy; runpy.run_module("open_instruct.grpo_fast", run_name="__main__", alter_sys=True)

open-instruct multiplies a verifier's score by `--verification_reward` (10 by default) and
penalises unfinished answers only with `--non_stop_penalty True --non_stop_penalty_value 0`
(our rule: a truncated answer earns 0).
"""

import json
from collections.abc import Iterable, Mapping
from typing import Any

Row = Mapping[str, Any]
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}


def _split(messages: list[Mapping[str, str]]) -> tuple[str, str]:
    """(the user's turn, the assistant's answer) of a one-turn sample."""
    turns = {m["role"]: m["content"] for m in messages}
    return turns["user"], turns["assistant"]


def sft_alpaca(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [{"instruction": user, "input": "", "output": answer, "id": r["sample_id"]}
            for r in rows for user, answer in [_split(r["messages"])]]


def sft_sharegpt(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [{"conversations": [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in r["messages"]],
             "id": r["sample_id"]} for r in rows]


def sft_messages(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [{"messages": [dict(m) for m in r["messages"]], "id": r["sample_id"]} for r in rows]


def dpo_alpaca(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [{"instruction": r["prompt"], "input": "", "chosen": r["chosen"], "rejected": r["rejected"],
             "id": r["pair_id"]} for r in rows]


def dpo_sharegpt(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [{"conversations": [{"from": "human", "value": r["prompt"]}],
             "chosen": {"from": "gpt", "value": r["chosen"]}, "rejected": {"from": "gpt", "value": r["rejected"]},
             "id": r["pair_id"]} for r in rows]


def dpo_messages(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}], "id": r["pair_id"]} for r in rows]


# name -> (what it is made of, the rows function, its dataset_info.json entry less file_name)
LLAMA_FACTORY: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "autoif_sft_alpaca": ("sft", sft_alpaca, {}),
    "autoif_sft_sharegpt": ("sft", sft_sharegpt, {"formatting": "sharegpt", "columns": {"messages": "conversations"}}),
    "autoif_dpo_alpaca": ("dpo", dpo_alpaca, {"ranking": True, "columns": {
        "prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}}),
    "autoif_dpo_sharegpt": ("dpo", dpo_sharegpt, {"formatting": "sharegpt", "ranking": True, "columns": {
        "messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}),
}
# kind -> (the rows function, its columns: also those of an empty set)
MESSAGES = {"sft": (sft_messages, ("messages", "id")), "dpo": (dpo_messages, ("prompt", "chosen", "rejected", "id"))}


def dataset_info() -> dict[str, dict[str, Any]]:
    """LLaMA-Factory's `dataset_info.json` for the files `LLAMA_FACTORY` names (NAME.json)."""
    return {name: {"file_name": f"{name}.json", **entry} for name, (_, _, entry) in LLAMA_FACTORY.items()}


# --------------------------------------------------------------------------- RL prompts (RLVR)

RLVR_SOURCE = "autoif"  # verl's data_source, open-instruct's dataset (its verifier's name: lowercase)
RLVR_ABILITY = "instruction_following"


def _turns(r: Row) -> list[dict[str, str]]:
    return [{"role": "user", "content": r["prompt"]}]


def ground_truth(r: Row) -> str:
    """What verl's and open-instruct's reward functions get per row: the verifiers' sources
    (and the ids, for a reader of the logs) as a JSON string."""
    return json.dumps({"verifiers": list(r["verifiers"]), "instruction_id": r["instruction_id"],
                       "prompt_id": r["prompt_id"]}, ensure_ascii=False)


def rl_trl(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """TRL's conversational prompt-only rows; `verifiers` and `probe` reach the reward function."""
    return [{"prompt": _turns(r), "verifiers": list(r["verifiers"]), "probe": bool(r["probe"]),
             "instruction_id": r["instruction_id"], "prompt_id": r["prompt_id"]} for r in rows]


def rl_verl(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """verl's RL dataset rows (its examples/data_preprocess scripts' shape)."""
    return [{"data_source": RLVR_SOURCE, "prompt": _turns(r), "ability": RLVR_ABILITY,
             "reward_model": {"style": "rule", "ground_truth": ground_truth(r)},
             "extra_info": {"index": i, "prompt_id": r["prompt_id"], "instruction_id": r["instruction_id"],
                            "instruction": r["instruction"], "probe": bool(r["probe"])}}
            for i, r in enumerate(rows)]


def rl_open_instruct(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """open-instruct's RLVR rows (allenai/RLVR-IFeval's columns, with the prompt's id as `key`)."""
    return [{"messages": _turns(r), "ground_truth": ground_truth(r), "dataset": RLVR_SOURCE,
             "constraint_type": r["instruction_id"], "constraint": r["instruction"], "key": r["prompt_id"]}
            for r in rows]


# format -> (the rows function, its columns: also those of an empty set)
RLVR = {
    "trl": (rl_trl, ("prompt", "verifiers", "probe", "instruction_id", "prompt_id")),
    "verl": (rl_verl, ("data_source", "prompt", "ability", "reward_model", "extra_info")),
    "open_instruct": (rl_open_instruct,
                      ("messages", "ground_truth", "dataset", "constraint_type", "constraint", "key")),
}
