"""The training data in the formats trainers read: pure functions from our rows to theirs.

- LLaMA-Factory: alpaca (instruction / input / output) and sharegpt (conversations of
  from / value turns) for SFT, the same two with chosen / rejected for preference data, and
  the `dataset_info.json` entries that name them (`ranking: true` marks preference sets).
- Chat `messages` JSONL: TRL's conversational formats (SFT: `messages`; preference: `prompt`,
  `chosen`, `rejected`, each a list of turns).
Each row keeps its id (`sample_id` / `pair_id`), so a trained-on row traces back (`autoif trace`).
"""

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
