"""Step 13, training: our SFT samples and DPO pairs as the rows TRL's trainers read, checked,
and what a run's log says about it. Pure functions (no torch, no TRL).

- SFT: TRL's conversational prompt-completion rows (`prompt`: the turns before the answer,
  `completion`: the answer), so the loss is on the answer only, as the paper trains: built
  from the chat `messages` the exports write (method/exports.py).
- DPO: TRL's conversational preference rows (`prompt`, `chosen`, `rejected`: turn lists),
  exactly the exports' `dpo_messages`.
- GRPO: TRL's conversational prompt rows, with each prompt's verifier sources and trip-wire
  flag as the columns the reward function is called with (rewards.VerifierReward).
Each row keeps its `id`, so a checkpoint's manifest names the rows it was trained on.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from . import exports

Row = Mapping[str, Any]


class TrainingDataError(ValueError):
    """The data cannot be trained on (empty, or a row without the turns a trainer needs)."""


def _require(name: str, rows: list[Any]) -> None:
    if not rows:
        raise TrainingDataError(f"{name} has no rows: nothing to train on (materialize it with data first; "
                                "an empty set means every sample was filtered out upstream)")


def _text(turns: list[Mapping[str, str]]) -> str:
    return "".join(t.get("content") or "" for t in turns).strip()


def sft_rows(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """`sft_dataset` rows -> TRL prompt-completion rows; a row whose last turn is not a non-empty
    assistant answer after at least one user turn is an error naming it."""
    out = []
    for r in exports.sft_messages(rows):
        turns = r["messages"]
        if len(turns) < 2 or turns[-1]["role"] != "assistant" or not _text(turns[-1:]):
            raise TrainingDataError(f"sft_dataset row {r['id']}: needs user turn(s) then a non-empty assistant "
                                    f"answer, has roles {[t['role'] for t in turns]}")
        if not _text(turns[:-1]):
            raise TrainingDataError(f"sft_dataset row {r['id']}: its prompt is empty")
        out.append({"prompt": turns[:-1], "completion": turns[-1:], "id": r["id"]})
    _require("sft_dataset", out)
    return out


def dpo_rows(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """`dpo_pairs` rows -> TRL conversational preference rows; an empty prompt or answer, or a
    pair whose two answers are the same text (nothing to prefer), is an error naming it."""
    out = exports.dpo_messages(rows)
    for r in out:
        for part in ("prompt", "chosen", "rejected"):
            if not _text(r[part]):
                raise TrainingDataError(f"dpo_pairs row {r['id']}: its {part} is empty")
        if _text(r["chosen"]) == _text(r["rejected"]):
            raise TrainingDataError(f"dpo_pairs row {r['id']}: chosen and rejected are the same text")
    _require("dpo_pairs", out)
    return out


def grpo_rows(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """`rl_prompts` rows -> TRL's conversational prompt rows with the reward's columns, exactly
    the RLVR export's (`exports.rl_trl`); a row with an empty prompt or no verifier is an error
    naming it."""
    out = []
    for r in exports.rl_trl(rows):
        if not _text(r["prompt"]):
            raise TrainingDataError(f"rl_prompts row {r['prompt_id']}: its prompt is empty")
        if not r["verifiers"]:
            raise TrainingDataError(f"rl_prompts row {r['prompt_id']}: no verifier to reward an answer with")
        out.append({"prompt": r["prompt"], "verifiers": r["verifiers"], "probe": r["probe"], "id": r["prompt_id"]})
    _require("rl_prompts", out)
    return out


def without_ids(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(the rows as the trainer is given them, their ids in order): TRL keeps unknown columns
    through tokenization and its collators refuse strings."""
    return [{k: v for k, v in r.items() if k != "id"} for r in rows], [r["id"] for r in rows]


def loss_curve(log_history: Iterable[Mapping[str, Any]], key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) of every logged training step that has `key` (the Trainer's log holds
    per-step entries and a final summary without it)."""
    return [(int(e["step"]), float(e[key])) for e in log_history if key in e and "step" in e]


def summary(log_history: list[Mapping[str, Any]]) -> dict[str, float]:
    """The last logged value of every numeric metric, and the first and last loss."""
    last: dict[str, float] = {}
    for entry in log_history:
        last.update({k: float(v) for k, v in entry.items() if isinstance(v, (int, float)) and k not in ("step", "epoch")})
    losses = [v for _, v in loss_curve(log_history)]
    if losses:
        last["first_loss"], last["last_loss"] = losses[0], losses[-1]
    return last


def provenance(**parts: Any) -> str:
    """A checkpoint's version: a hash of what it was made from (the base model's identity, the
    starting checkpoint's version, the data version, the hyperparameters). Training is seeded, so
    the same provenance gives the same weights on the same machine and library versions."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
