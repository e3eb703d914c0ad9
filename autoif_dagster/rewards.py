"""The kept verifiers as a reward for reinforcement learning (RLVR): a completion's reward is
its pass rate under its instruction's verifiers, each run in the project's sandbox.

    from autoif_dagster.rewards import VerifierReward
    reward = VerifierReward()                       # the sandbox's default backend (docker)
    trl.GRPOTrainer(..., reward_funcs=[reward])     # rows carry a `verifiers` column (the RLVR export)

The rules, the same as the pipeline's (response_verdicts, selection.pass_rate):
- a verifier that raises, times out or crashes counts as not passed: an error never looks like
  compliance; each is counted by kind;
- a completion cut off at the token limit gets reward 0 without being judged (it is not an
  answer: the responses stage drops such samples too); counted;
- a row without verifiers, or an empty batch, is the caller's mistake: RewardError.

A trip-wire (after IFDecorator): some instructions' verifiers pass a degenerate answer (an empty
string, one word, a word repeated). On those prompts a policy can earn the reward without
answering; `tripwire` reports the share of their rewarded completions that are degenerate, which
climbs when the policy starts to game them.

Adapters for the other trainers the RLVR export is written for (method/exports.py), which pass
a row's verifiers as its `ground_truth` JSON: `compute_score` (verl's custom_reward_function)
and `open_instruct_verifier` (defines open-instruct's verifier for the export's `dataset`).
"""

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .method.exports import RLVR_SOURCE
from .method.selection import pass_rate
from .resources.sandbox import SandboxResource, VerifierJob

TRUNCATED_REWARD = 0.0
# Answers no instruction is followed by: a verifier passing one of these can be earned without
# answering. Each is an answer a collapsing policy actually produces.
DEGENERATE_ANSWERS = ("", "ok", "a", "yes yes yes yes yes yes yes yes", "...")
_WORD = re.compile(r"\w+")


class RewardError(ValueError):
    """A reward batch that cannot be scored as given (no completions, a row without verifiers)."""


def degenerate(text: str) -> bool:
    """An answer that says nothing: under 5 words, or 20+ words of which under a quarter differ."""
    words = _WORD.findall(text.lower())
    return len(words) < 5 or (len(words) >= 20 and len(set(words)) < len(words) / 4)


def completion_text(completion: Any) -> str:
    """The text of one completion as trainers pass it: a string, or chat turns (the last one's)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    raise RewardError(f"a completion is a string or a list of chat turns, not {type(completion).__name__}")


class VerifierReward:
    """Pass rate under each row's verifiers, judged in `sandbox`; a TRL reward function."""

    __name__ = "verifier_pass_rate"  # TRL names a reward's logged columns after it

    def __init__(self, sandbox: SandboxResource | None = None, eos_token_ids: Sequence[int] = ()) -> None:
        self.sandbox = sandbox or SandboxResource()
        self.eos_token_ids = frozenset(eos_token_ids)  # with TRL's completion_ids: which ones were cut off
        self.counts: Counter = Counter()  # over every call: completions, judged, truncated, errors by kind

    def score(self, texts: Sequence[str], verifier_sets: Sequence[Sequence[str]],
              truncated: Sequence[bool] | None = None) -> list[float]:
        """One reward per text: its pass rate under its verifiers (TRUNCATED_REWARD if cut off).
        Each distinct verifier judges every text it applies to in one sandbox job."""
        if not texts:
            raise RewardError("an empty reward batch: no completions to score")
        if len(verifier_sets) != len(texts):
            raise RewardError(f"{len(texts)} completions but {len(verifier_sets)} verifier sets")
        truncated = list(truncated) if truncated is not None else [False] * len(texts)
        for i, sources in enumerate(verifier_sets):
            if not sources:
                raise RewardError(f"completion {i} has no verifiers: an RL prompt carries its instruction's kept "
                                  "verifiers (instructions without one are not exported)")
        uses: dict[str, list[int]] = {}
        for i, sources in enumerate(verifier_sets):
            if not truncated[i]:
                for source in dict.fromkeys(sources):
                    uses.setdefault(source, []).append(i)
        jobs = [VerifierJob(source, [texts[i] for i in rows]) for source, rows in uses.items()]
        verdicts: list[list] = [[] for _ in texts]
        for rows, results in zip(uses.values(), self.sandbox.judge(jobs)):
            for i, verdict in zip(rows, results):
                verdicts[i].append(verdict)
        rewards = []
        for i, judged in enumerate(verdicts):
            if truncated[i]:
                rewards.append(TRUNCATED_REWARD)
                continue
            self.counts.update(f"error:{v.kind}" for v in judged if v.is_error)
            rewards.append(pass_rate(judged)[2])
        self.counts.update(completions=len(texts), truncated=sum(truncated), judged=len(texts) - sum(truncated))
        return rewards

    def __call__(self, prompts: Any = None, completions: Sequence[Any] = (), verifiers: Sequence[Sequence[str]] = (),
                 completion_ids: Sequence[Sequence[int]] | None = None, probe: Sequence[bool] | None = None,
                 log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float]:
        """TRL's reward-function call: dataset columns arrive as keyword lists (`verifiers`, and
        `probe` for the trip-wire); `completion_ids` tell which completions hit the token limit."""
        texts = [completion_text(c) for c in completions]
        cut = None
        if completion_ids is not None and self.eos_token_ids:
            cut = [not ids or ids[-1] not in self.eos_token_ids for ids in completion_ids]
        rewards = self.score(texts, verifiers, cut)
        if log_metric is not None:
            log_metric("reward/truncated", sum(cut) / len(texts) if cut else 0.0)
            log_metric("pass/all_verifiers", sum(r == 1.0 for r in rewards) / len(rewards))
            if probe is not None:
                share = tripwire(texts, rewards, probe)
                if share is not None:
                    log_metric("tripwire/degenerate_rewarded", share)
        return rewards


def tripwire(texts: Sequence[str], rewards: Sequence[float], probe: Sequence[bool]) -> float | None:
    """Of the rewarded completions to probe prompts (those whose verifiers pass a degenerate
    answer), the share that are degenerate; None when no probe completion was rewarded."""
    rewarded = [degenerate(t) for t, r, p in zip(texts, rewards, probe) if p and r > 0]
    return sum(rewarded) / len(rewarded) if rewarded else None


def probes(verifier_sets: Sequence[Sequence[str]], sandbox: SandboxResource) -> list[bool]:
    """Per verifier set: does a degenerate answer earn the whole reward under it?"""
    scorer = VerifierReward(sandbox)
    answers = list(DEGENERATE_ANSWERS)
    flat = scorer.score([a for _ in verifier_sets for a in answers],
                        [sources for sources in verifier_sets for _ in answers])
    return [max(flat[i * len(answers):(i + 1) * len(answers)]) == 1.0 for i in range(len(verifier_sets))]


# --------------------------------------------------------------------------- trainers' adapters
# The RLVR exports (method/exports.py) carry a row's verifiers as `ground_truth`, a JSON string
# {"verifiers": [sources], ...}; verl's and open-instruct's reward hooks get it back per answer.

_REWARD: VerifierReward | None = None  # compute_score's, built on its first call


def default_reward() -> VerifierReward:
    """The module's VerifierReward (one per process): the sandbox backend AUTOIF_SANDBOX names
    ("docker", "host", "local", "ray"), else SandboxResource's default."""
    global _REWARD
    if _REWARD is None:
        backend = os.environ.get("AUTOIF_SANDBOX")
        _REWARD = VerifierReward(SandboxResource(**({"backend": backend} if backend else {})))
    return _REWARD


def verifier_sources(ground_truth: Any) -> list[str]:
    """The verifier sources an exported row's `ground_truth` carries: its JSON string (or the
    object it decodes to, or a bare list of sources). RewardError when there are none."""
    value = ground_truth
    if isinstance(value, bytes | bytearray):
        value = value.decode()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RewardError(f"ground_truth is not the RLVR export's JSON ({exc}): {ground_truth!r:.200}") from None
    if isinstance(value, Mapping):
        value = value.get("verifiers")
    if not isinstance(value, Sequence) or isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise RewardError(f"ground_truth carries no list of verifier sources: {ground_truth!r:.200}")
    if not value:
        raise RewardError(f"ground_truth has no verifiers: {ground_truth!r:.200}")
    return list(value)


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **_: Any) -> float:
    """verl's `custom_reward_function` (path: pkg://autoif_dagster.rewards, name: compute_score):
    one decoded answer's pass rate under the verifiers its row's ground_truth carries. Rows of
    another data_source go to verl's own default_compute_score (a mixed dataset)."""
    if data_source != RLVR_SOURCE:
        try:
            from verl.utils.reward_score import default_compute_score
        except ImportError:
            raise RewardError(f"data_source {data_source!r} is not the AutoIF export's ({RLVR_SOURCE!r}), and "
                              "verl's default_compute_score cannot be imported here to score it") from None
        return default_compute_score(data_source, solution_str, ground_truth, extra_info)
    return default_reward().score([solution_str], [verifier_sources(ground_truth)])[0]


# special tokens open-instruct leaves in a decoded answer (it decodes with skip_special_tokens=False)
_TRAILING_SPECIAL = re.compile(r"(?:(?:<\|[^<>|]{1,40}\|>|</s>|<eos>)\s*)+$")


def open_instruct_text(prediction: str) -> str:
    """An answer as open-instruct hands it to a verifier, less the special tokens it ends with
    (the end-of-turn token: not part of the answer)."""
    return _TRAILING_SPECIAL.sub("", prediction)


def open_instruct_verifier(name: str = RLVR_SOURCE) -> type:
    """Define our reward as an open-instruct verifier and return its class. open-instruct's
    `build_all_verifiers` instantiates every direct subclass of its `VerifierFunction` and keys it
    by `name.lower()`; rows whose `dataset` is that name (the export's) are scored by it. Call this
    before open-instruct builds its verifiers (docs/using/rlvr.md: a three-line launcher)."""
    from open_instruct.ground_truth_utils import VerificationResult, VerifierFunction

    class AutoIFVerifier(VerifierFunction):
        """Pass rate under the row's AutoIF verifiers (ground_truth), judged in the sandbox."""

        def __init__(self, verifier_config: Any = None) -> None:
            super().__init__(name, weight=1.0, verifier_config=verifier_config)

        def __call__(self, tokenized_prediction: Any, prediction: str, label: Any, query: str | None = None,
                     rollout_state: dict | None = None) -> Any:
            return VerificationResult(score=compute_score(RLVR_SOURCE, open_instruct_text(prediction), label))

    return AutoIFVerifier
