"""RLVR: the RL prompts (each instruction prompt with its instruction's kept verifiers of the
same round), their exports read back the way TRL, verl and open-instruct read them, and the
reward adapters, which must give the pipeline's own verdicts on the recorded default run."""

import json
import subprocess
import sys
import types
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace

import dagster as dg
import datasets
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoif_dagster import rewards
from autoif_dagster.assets.datasets import rl_prompts, rlvr_exports, training_exports
from autoif_dagster.checks import schema_problems
from autoif_dagster.definitions import all_assets
from autoif_dagster.method import exports
from autoif_dagster.replay import replay_resources
from autoif_dagster.resources.exports import ExportResource
from autoif_dagster.resources.io_manager import ParquetIOManager, read_artifact
from autoif_dagster.rewards import RewardError, VerifierReward
from autoif_dagster.rounds import ROUNDS
from autoif_dagster.schemas import SCHEMAS

from .rounds import ROUND, frame
from .test_exports import PAIRS, SFT

ROUND2 = "2026-11-02"
# A (lowercase): round 1 and round 2 each kept a verifier of their own; neither passes a degenerate answer
LOWER_LONG = "def evaluate(response):\n    return response.islower() and len(response.split()) >= 10\n"
LOWER_NO_DIGITS = ("def evaluate(response):\n"
                   "    return response.islower() and not any(c.isdigit() for c in response) and len(response) > 40\n")
# B (end with Bye): a verifier in round 2 only
BYE = "def evaluate(response):\n    return response.rstrip().endswith('Bye')\n"
# D (no "very", no "really"): both pass the empty answer: a trip-wire prompt
NO_VERY = "def evaluate(response):\n    return 'very' not in response.lower()\n"
NO_REALLY = "def evaluate(response):\n    return 'really' not in response.lower()\n"
RAISES = "def evaluate(response):\n    raise RuntimeError('a broken verifier')\n"
SLEEPS = "import time\ndef evaluate(response):\n    time.sleep(30)\n    return True\n"

INSTRUCTIONS = {"ins-a": "Answer in lowercase letters only", "ins-b": "End your answer with 'Bye'",
                "ins-c": "Answer in exactly three sentences", "ins-d": "Do not use the words 'very' or 'really'"}
QUERIES = {"qry-1": "How do I brew tea?", "qry-2": "Why is the sea salty?"}


def _prompt(iid: str, qid: str) -> dict:
    return {"prompt_id": f"prm-{iid[-1]}{qid[-1]}", "instruction_id": iid, "query_id": qid,
            "instruction": INSTRUCTIONS[iid], "query": QUERIES[qid], "prompt": f"{QUERIES[qid]}\n\n{INSTRUCTIONS[iid]}"}


def _verifier(vid: str, iid: str, func: str, accuracy: float) -> dict:
    return {"verifier_id": vid, "instruction_id": iid, "candidate_ids": [f"cand-{vid}"], "func": func,
            "accuracy": accuracy}


PROMPTS = {
    # C never kept a verifier; B none in round 1; round 2 repeats A's round-1 prompt word for word
    ROUND: [_prompt("ins-a", "qry-1"), _prompt("ins-b", "qry-1"), _prompt("ins-c", "qry-1"), _prompt("ins-d", "qry-1")],
    ROUND2: [_prompt("ins-a", "qry-1"), _prompt("ins-a", "qry-2"), _prompt("ins-b", "qry-2")],
}
VERIFIERS = {
    ROUND: [_verifier("ver-a1", "ins-a", LOWER_LONG, 0.9), _verifier("ver-d1", "ins-d", NO_VERY, 1.0),
            _verifier("ver-d2", "ins-d", NO_REALLY, 0.8)],
    ROUND2: [_verifier("ver-a2", "ins-a", LOWER_NO_DIGITS, 0.75), _verifier("ver-b2", "ins-b", BYE, 1.0)],
}


def _round_source(name: str, by_round: dict[str, list[dict]]) -> dg.AssetsDefinition:
    @dg.asset(name=name, partitions_def=ROUNDS)
    def source(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return frame(name, by_round.get(context.partition_key, []), context.partition_key)

    return source


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory, sandbox):
    """rl_prompts materialized over two rounds of hand-made instruction prompts and verifiers."""
    tmp_path = tmp_path_factory.mktemp("two-rounds")
    sources = [_round_source("instruction_prompts", PROMPTS), _round_source("verifiers", VERIFIERS)]
    io = {"io_manager": ParquetIOManager(base_dir=str(tmp_path / "assets"))}
    with dg.instance_for_test() as instance:
        for key in (ROUND, ROUND2):
            assert dg.materialize(sources, partition_key=key, resources=io, instance=instance).success
        result = dg.materialize([rl_prompts, *sources], selection=dg.AssetSelection.assets(rl_prompts),
                                resources={**io, "sandbox": sandbox}, instance=instance)
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
    return read_artifact(tmp_path / "assets", "rl_prompts"), metadata


def test_rl_prompts_carry_their_instructions_verifiers_of_the_same_round(two_rounds):
    df, _ = two_rounds
    assert df.schema == SCHEMAS["rl_prompts"] and schema_problems("rl_prompts", df) == []
    rows = {r["prompt_id"]: r for r in df.to_dicts()}
    # B's round-1 prompt has no verifier of its round (B's verifier is round 2's); C has none at all
    assert list(rows) == ["prm-a1", "prm-d1", "prm-a2", "prm-b2"]
    a1, d1, a2, b2 = rows.values()
    # A's repeated prompt keeps its first round's row, with that round's verifier, not round 2's
    assert (a1["round"], a1["verifier_ids"], a1["verifiers"], a1["verifier_accuracy"]) == (
        ROUND, ["ver-a1"], [LOWER_LONG], [0.9])
    assert (a2["round"], a2["verifier_ids"], a2["verifiers"], a2["verifier_accuracy"]) == (
        ROUND2, ["ver-a2"], [LOWER_NO_DIGITS], [0.75])
    assert (b2["round"], b2["verifiers"]) == (ROUND2, [BYE])
    assert (d1["verifier_ids"], d1["verifiers"], d1["verifier_accuracy"]) == (["ver-d1", "ver-d2"],
                                                                            [NO_VERY, NO_REALLY], [1.0, 0.8])
    assert (a1["prompt"], a1["instruction"], a1["query"]) == (PROMPTS[ROUND][0]["prompt"], INSTRUCTIONS["ins-a"],
                                                              QUERIES["qry-1"])
    # the trip-wire: only D's verifiers are passed by a degenerate answer (the empty one)
    assert {pid: r["probe"] for pid, r in rows.items()} == {"prm-a1": False, "prm-d1": True, "prm-a2": False,
                                                            "prm-b2": False}


def test_rl_prompts_count_what_they_drop_and_show_their_instructions(two_rounds):
    _, metadata = two_rounds
    assert (metadata["rows_in"], metadata["rows_out"]) == (7, 4)
    assert metadata["dropped"] == {"no_verifier": 2, "repeated_across_rounds": 1}
    assert metadata["rows_in"] == metadata["rows_out"] + metadata["dropped_total"]
    assert (metadata["probe_prompts"], metadata["instructions"]) == (1, 3)
    assert metadata["rows_by_round"] == {ROUND: 2, ROUND2: 2}
    table = metadata["examples"].splitlines()
    assert table[0] == "| instruction | verifiers | prompts | probe |"
    assert table[2:] == [f"| {INSTRUCTIONS['ins-a']} | 1 | 2 | False |", f"| {INSTRUCTIONS['ins-d']} | 2 | 1 | True |",
                         f"| {INSTRUCTIONS['ins-b']} | 1 | 1 | False |"]


# ---------------------------------------------------------------- the exports, read as trainers read them

RL_ROWS = [
    {"prompt_id": "prm-a1", "instruction_id": "ins-a", "instruction": INSTRUCTIONS["ins-a"], "query": QUERIES["qry-1"],
     "prompt": PROMPTS[ROUND][0]["prompt"], "verifier_ids": ["ver-a1"], "verifiers": [LOWER_LONG],
     "verifier_accuracy": [0.9], "probe": False},
    {"prompt_id": "prm-d1", "instruction_id": "ins-d", "instruction": INSTRUCTIONS["ins-d"], "query": QUERIES["qry-1"],
     "prompt": PROMPTS[ROUND][3]["prompt"], "verifier_ids": ["ver-d1", "ver-d2"], "verifiers": [NO_VERY, NO_REALLY],
     "verifier_accuracy": [1.0, 0.8], "probe": True},
]
LONG_LOWER = "steep the leaves in hot water for three minutes and then pour the tea out slowly"
# answers and the reward each earns under its row's verifiers
ANSWERS = [(0, LONG_LOWER, 1.0), (0, "Steep It.", 0.0), (1, "it is really good tea for the morning", 0.5), (1, "", 1.0)]


def _export(tmp_path, rows=RL_ROWS):
    resource = ExportResource(directory=str(tmp_path / "exports"))
    out = rlvr_exports(dg.build_asset_context(), resource, frame("rl_prompts", rows))
    version = (tmp_path / "exports" / "rlvr" / "LATEST").read_text().strip()
    return out, tmp_path / "exports" / "rlvr" / version


def _fake_grpo_trainer(reward: VerifierReward, metrics: dict) -> SimpleNamespace:
    """What GRPOTrainer._calculate_rewards reads of its trainer (TRL 1.16), nothing else."""
    return SimpleNamespace(accelerator=SimpleNamespace(device="cpu", is_main_process=True), reward_funcs=[reward],
                           reward_processing_classes=[None], reward_func_names=[reward.__name__],
                           state=SimpleNamespace(global_step=0), args=SimpleNamespace(report_to=[]),
                           _log_completion_extra=lambda column, values: None,
                           _log_metric=lambda name, value: metrics[name].append(value), environments=None)


def test_the_trl_set_is_conversational_and_its_columns_reach_the_reward_through_grpo(tmp_path, sandbox):
    """TRL's own reward step (GRPOTrainer._calculate_rewards, on a stand-in for the trainer's
    state) over rows of the exported `datasets` set: `verifiers` and `probe` reach
    VerifierReward as keyword lists, one reward per completion."""
    from trl import GRPOTrainer
    from trl.data_utils import is_conversational

    out, root = _export(tmp_path)
    hf = datasets.load_from_disk(str(root / "hf" / "rl_prompts"))
    assert hf.column_names == ["prompt", "verifiers", "probe", "instruction_id", "prompt_id"]
    assert all(is_conversational(row) for row in hf)
    assert hf[1]["prompt"] == [{"role": "user", "content": RL_ROWS[1]["prompt"]}]
    jsonl = [json.loads(line) for line in (root / "trl" / "rl_prompts.jsonl").read_text().splitlines()]
    assert jsonl == hf.to_list()
    inputs = [hf[i] for i, _, _ in ANSWERS]  # TRL repeats a prompt's row for each of its generations
    completions = [[{"role": "assistant", "content": text}] for _, text, _ in ANSWERS]
    metrics: dict = defaultdict(list)
    reward = VerifierReward(sandbox)
    found = GRPOTrainer._calculate_rewards(_fake_grpo_trainer(reward, metrics), inputs, [r["prompt"] for r in inputs],
                                           completions, [[1]] * len(inputs))
    assert found[:, 0].tolist() == [expected for _, _, expected in ANSWERS]
    assert metrics["tripwire/degenerate_rewarded"] == [0.5]  # of the two rewarded probe answers, "" is degenerate
    assert reward.counts["completions"] == len(ANSWERS)
    manifest = out.value
    assert manifest.schema == SCHEMAS["rlvr_exports"]
    assert set(manifest["format"]) == {"hf", "trl", "verl", "open_instruct"}
    assert manifest.filter(pl.col("file") == "trl/rl_prompts.jsonl")["rows"].item() == len(RL_ROWS)
    assert out.metadata["files"].value == manifest.height


def test_the_verl_parquet_has_verls_columns_and_compute_score_scores_its_rows(tmp_path, sandbox, monkeypatch):
    _, root = _export(tmp_path)
    path = root / "verl" / "rl_prompts.parquet"
    schema = pq.read_table(path).schema
    assert schema.names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert schema.field("prompt").type == pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    assert pa.types.is_struct(schema.field("reward_model").type) and pa.types.is_struct(schema.field("extra_info").type)
    # as verl's RLHFDataset loads it
    rows = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert rows[0]["data_source"] == exports.RLVR_SOURCE and rows[0]["ability"] == "instruction_following"
    assert rows[1]["prompt"] == [{"role": "user", "content": RL_ROWS[1]["prompt"]}]
    assert rows[1]["reward_model"]["style"] == "rule"
    assert [r["extra_info"]["index"] for r in rows] == [0, 1]
    assert (rows[1]["extra_info"]["prompt_id"], rows[1]["extra_info"]["probe"]) == ("prm-d1", True)
    monkeypatch.setenv("AUTOIF_SANDBOX", sandbox.backend)
    monkeypatch.setattr(rewards, "_REWARD", None)
    scores = [rewards.compute_score(rows[i]["data_source"], text, rows[i]["reward_model"]["ground_truth"],
                                    dict(rows[i]["extra_info"])) for i, text, _ in ANSWERS]
    assert scores == [expected for _, _, expected in ANSWERS]
    assert rewards.default_reward().sandbox.backend == sandbox.backend


class _OpenInstruct:
    """A stand-in for open_instruct.ground_truth_utils (allenai/open-instruct at e6c3044): its
    VerifierFunction's interface and build_all_verifiers' registry rule, every direct subclass
    made with its config and keyed by its name lowercased. open-instruct itself is not installed
    here (it pins its own torch and vLLM)."""

    @staticmethod
    def module() -> types.ModuleType:
        module = types.ModuleType("open_instruct.ground_truth_utils")

        @dataclass
        class VerificationResult:
            score: float
            cost: float = 0.0
            reasoning: str | None = None

        class VerifierFunction(ABC):
            def __init__(self, name, weight=1.0, verifier_config=None):
                self.name, self.weight, self.verifier_config = name, weight, verifier_config

            @abstractmethod
            def __call__(self, tokenized_prediction, prediction, label, query=None, rollout_state=None): ...

        def build_all_verifiers(args=None, streaming_config=None):
            return {(v := subclass(None)).name.lower(): v for subclass in VerifierFunction.__subclasses__()}

        module.VerificationResult, module.VerifierFunction = VerificationResult, VerifierFunction
        module.build_all_verifiers = build_all_verifiers
        return module


@pytest.fixture
def open_instruct(monkeypatch, sandbox):
    """open-instruct's verifiers, ours defined by the adapter, on the test's sandbox backend."""
    module = _OpenInstruct.module()
    monkeypatch.setitem(sys.modules, "open_instruct", types.ModuleType("open_instruct"))
    monkeypatch.setitem(sys.modules, "open_instruct.ground_truth_utils", module)
    monkeypatch.setenv("AUTOIF_SANDBOX", sandbox.backend)
    monkeypatch.setattr(rewards, "_REWARD", None)
    rewards.open_instruct_verifier()
    return module.build_all_verifiers()


def test_the_open_instruct_jsonl_is_rlvr_ifevals_shape_and_the_adapter_scores_it(tmp_path, open_instruct):
    _, root = _export(tmp_path)
    rows = [json.loads(line) for line in (root / "open_instruct" / "rl_prompts.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in rows] == [sorted(["messages", "ground_truth", "dataset", "constraint_type", "constraint",
                                                 "key"])] * 2
    assert rows[1]["messages"] == [{"role": "user", "content": RL_ROWS[1]["prompt"]}]
    assert (rows[1]["dataset"], rows[1]["constraint"], rows[1]["key"]) == ("autoif", INSTRUCTIONS["ins-d"], "prm-d1")
    assert isinstance(rows[1]["ground_truth"], str)
    assert json.loads(rows[1]["ground_truth"])["verifiers"] == [NO_VERY, NO_REALLY]
    verifier = open_instruct[rows[0]["dataset"].lower()]  # open-instruct's lookup: the row's dataset
    # its decoded answers keep the end-of-turn token: not part of the answer
    scores = [verifier([1, 2], text + "<|im_end|>", rows[i]["ground_truth"]).score for i, text, _ in ANSWERS]
    assert scores == [expected for _, _, expected in ANSWERS]
    assert rewards.open_instruct_text("Bye.<|im_end|>\n<|endoftext|>\n") == "Bye."
    assert rewards.open_instruct_text("Bye.\n<|im_end|>") == "Bye.\n"  # the answer's own text stays whole
    assert rewards.open_instruct_text("a <|tag|> in the middle") == "a <|tag|> in the middle"


def test_the_rlvr_export_is_content_versioned(tmp_path):
    _, root = _export(tmp_path)
    written = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again, root_again = _export(tmp_path)
    assert root_again == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == written  # not written again
    assert set(again.value["version"]) == {root.name}
    _, other = _export(tmp_path, RL_ROWS[:1])
    assert other != root and other.parent == root.parent and root.is_dir()  # a new version beside the old
    assert (root.parent / "LATEST").read_text().strip() == other.name
    assert datasets.load_from_disk(str(other / "hf" / "rl_prompts")).num_rows == 1
    # the training data's export shares the directory, with its own LATEST
    manifest = training_exports(dg.build_asset_context(), ExportResource(directory=str(tmp_path / "exports")),
                                frame("sft_dataset", SFT), frame("dpo_pairs", PAIRS)).value
    assert (tmp_path / "exports" / "LATEST").read_text().strip() == manifest["version"][0]
    assert (root.parent / "LATEST").read_text().strip() == other.name
    assert not [p for p in (tmp_path / "exports").rglob(".*") if p.name.endswith(".tmp")]


def test_an_rlvr_export_that_fails_leaves_no_version_and_a_dead_ones_staging_is_swept(tmp_path, monkeypatch):
    rlvr = tmp_path / "exports" / "rlvr"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (rlvr / f".0123456789ab.{dead}.deadbeef.tmp" / "trl").mkdir(parents=True)  # a killed export's leftovers

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)  # the verl set, after the TRL and HF sets are written
    with pytest.raises(OSError, match="disk full"):
        _export(tmp_path)
    assert list(rlvr.iterdir()) == []  # no version, no LATEST, no staging (the dead one's swept too)
    monkeypatch.undo()
    _, root = _export(tmp_path)
    assert sorted(p.name for p in rlvr.iterdir()) == sorted(["LATEST", root.name])
    assert len((root / "open_instruct" / "rl_prompts.jsonl").read_text().splitlines()) == len(RL_ROWS)


# ---------------------------------------------------------------- the reward on the recorded default run

@pytest.fixture(scope="module")
def recorded(tmp_path_factory, sandbox):
    """The default run replayed from its recording (~6 s: tests/test_default_run.py's way)."""
    home = tmp_path_factory.mktemp("default-run-rlvr")
    result = dg.materialize(all_assets, partition_key=ROUND, resources=replay_resources(home, sandbox))
    assert result.success
    names = ("responses", "response_verdicts", "rl_prompts")
    return home, {name: read_artifact(home / "assets", name) for name in names}


def _judged(frames: dict[str, pl.DataFrame]) -> list[dict]:
    """Every recorded response with its pass rate and its RL prompt's row (same round)."""
    return (frames["responses"].select("round", "response_id", "prompt_id", "response")
            .join(frames["response_verdicts"].select("round", "response_id", "pass_rate"), on=["round", "response_id"])
            .join(frames["rl_prompts"].select("round", "prompt_id", "verifiers"), on=["round", "prompt_id"], how="left")
            .sort("response_id").to_dicts())


def test_the_reward_gives_the_pipelines_own_pass_rate_for_every_recorded_response(recorded, sandbox):
    """VerifierReward over the recorded run's responses, each under its RL prompt's verifiers,
    run again in the sandbox (no ledger): exactly response_verdicts' pass rate, every one."""
    _, frames = recorded
    judged = _judged(frames)
    assert len(judged) == frames["response_verdicts"].height > 150
    assert all(r["verifiers"] for r in judged)  # every response's prompt is an RL prompt
    reward = VerifierReward(sandbox)
    found = reward.score([r["response"] for r in judged], [r["verifiers"] for r in judged])
    assert [(r["response_id"], f) for r, f in zip(judged, found)] == [(r["response_id"], r["pass_rate"])
                                                                      for r in judged]
    assert {0.0, 1.0} <= set(found)  # some pass, some fail (the recording's verifiers of an instruction all agree)
    assert reward.counts["completions"] == reward.counts["judged"] == len(judged)


def test_verl_and_open_instruct_adapters_on_exported_rows_agree_with_the_pipeline(recorded, sandbox, open_instruct):
    home, frames = recorded
    folder = home / "exports" / "rlvr"
    folder /= (folder / "LATEST").read_text().strip()
    verl = {r["extra_info"]["prompt_id"]: r for r in pq.read_table(folder / "verl" / "rl_prompts.parquet").to_pylist()}
    lines = (folder / "open_instruct" / "rl_prompts.jsonl").read_text().splitlines()
    oi = {r["key"]: r for r in map(json.loads, lines)}
    assert set(verl) == set(oi) == set(frames["rl_prompts"]["prompt_id"])
    judged = _judged(frames)
    sample = judged[:: len(judged) // 12][:12]  # every response_id-sorted 12th: a spread of pass rates
    assert len({r["pass_rate"] for r in sample}) > 1
    for r in sample:
        row = verl[r["prompt_id"]]
        assert rewards.compute_score(row["data_source"], r["response"], row["reward_model"]["ground_truth"],
                                     row["extra_info"]) == r["pass_rate"], r
        line = oi[r["prompt_id"]]
        assert open_instruct[line["dataset"]]([], r["response"], line["ground_truth"]).score == r["pass_rate"], r


# ---------------------------------------------------------------- bad input

def test_a_row_without_verifiers_and_an_empty_batch_are_errors(sandbox):
    reward = VerifierReward(sandbox)
    with pytest.raises(RewardError, match="completion 1 has no verifiers"):
        reward.score(["fine", "no verifiers"], [[NO_VERY], []])
    with pytest.raises(RewardError, match="completion 1 has no verifiers"):  # as TRL calls it
        reward(prompts=[[], []], completions=[[{"role": "assistant", "content": "a"}]] * 2, verifiers=[[NO_VERY], []])
    with pytest.raises(RewardError, match="empty reward batch"):
        reward.score([], [])
    with pytest.raises(RewardError, match="ground_truth has no verifiers"):
        rewards.compute_score(exports.RLVR_SOURCE, "an answer", json.dumps({"verifiers": [], "prompt_id": "prm-x"}))
    with pytest.raises(RewardError, match="not the RLVR export's JSON"):
        rewards.compute_score(exports.RLVR_SOURCE, "an answer", "lowercase")
    with pytest.raises(RewardError, match="data_source 'gsm8k' is not the AutoIF export's"):
        rewards.compute_score("gsm8k", "42", "42")  # verl is not installed here to score it
    assert reward.counts["completions"] == 0  # nothing was judged


def test_a_verifier_that_raises_or_times_out_counts_as_not_passed(sandbox):
    quick = type(sandbox)(**{**dict(sandbox), "timeout_s": 0.5})
    reward = VerifierReward(quick)
    found = reward.score(["hello there", "HELLO"], [[LOWER_LONG.replace(">= 10", ">= 2"), RAISES, SLEEPS], [RAISES]])
    assert found == [pytest.approx(1 / 3), 0.0]
    assert (reward.counts["error:exception"], reward.counts["error:timeout"]) == (2, 1)
    assert reward.counts["judged"] == 2
