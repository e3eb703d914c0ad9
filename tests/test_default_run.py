"""The default run (README's `make run`: default models, default config, packaged seeds and
queries), replayed from its recorded completions: the whole graph in seconds, no engine,
with the real sandbox and NLI judge. What it must give is the product's promise: training
data that passes its own verifiers and traces back to a seed.

The recording is `tests/fixtures/default_run.jsonl.gz`, exported from a real cold run by
`benchmarks/bench_main_job.py --record tests/fixtures/default_run.jsonl.gz`. A change to a
default prompt, sampling parameter or K changes the requests: replay then fails naming the
first request it has no completion for, and the recording must be made again.
"""


import dagster as dg
import polars as pl
import pytest

from autoif_dagster.assets.verifiers import cross_validate_pool, judge_pools
from autoif_dagster.config import AutoIFConfig, VerifierConfig
from autoif_dagster.definitions import all_assets
from autoif_dagster.method.crossval import pool_candidates, settled
from autoif_dagster.method.selection import pass_rate
from autoif_dagster.replay import replay_resources
from autoif_dagster.resources.io_manager import read_artifact
from autoif_dagster.resources.sandbox import SandboxResource, VerifierJob
from autoif_dagster.schemas import SCHEMAS
from autoif_dagster.trace import Tracer
from tests.ci import unavailable
from tests.lineage import assert_traces_to_a_seed
from tests.rounds import ROUND

@pytest.fixture(scope="module")
def replayed(tmp_path_factory, sandbox):
    home = tmp_path_factory.mktemp("default-run")
    resources = replay_resources(home, sandbox)
    result = dg.materialize(all_assets, partition_key=ROUND, resources=resources)
    assert result.success
    metadata = {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
                for m in (ev.event_specific_data.materialization for ev in result.get_asset_materialization_events())}
    frames = {name: read_artifact(home / "assets", name) for name in SCHEMAS}
    return home, frames, metadata, sandbox


def test_the_default_run_yields_training_data_past_the_papers_bars(replayed):
    """The default run's real completions through today's code, with the paper's thresholds.
    The recording (round 2026-11-01, bf16 on an AMD EPYC Zen 4: recorded cold on 2026-12-06,
    made again warm on 2026-12-07 three times, the new requests going to the engine: when augmentation
    doubled, then when verifier generations came in waves, augmentation grew to 20 requests and
    a round's 54 prompts were spread over its instructions; then for 26 augmentation requests and
    2.5 verifier generations per instruction: 133 instructions, 15 consistent, 3-4 queries each;
    then for a query pool of conversation openings only, 250 new answers and scores) gives 88 SFT
    rows from 13 instructions and 61 DPO pairs (issue #22 asks 30 from 8, and 15; 89 before "KNOWLEDGE
    IS POWER." for "write a song about knowledge" counted as one sentence for a piece; 70 from 9 and
    44 with every ShareGPT segment's first turn in the pool; 71
    and 45 before a name run together from the query's words, "RealEstateMarketPlace", counted as
    restating it; with 20 requests and 3.5 generations, 56 from 10 and 41; with 8 requests and 6 queries of 5 answers,
    85 from 9 and 56; with 4 requests 55 from 6 and 43). The same completions always
    give the same rows, so anything else is a change of the code's: a drop is a regression; a
    gain is written down here once it is understood."""
    _, frames, metadata, _ = replayed
    assert sum(m.get("ledger_misses", 0) for m in metadata.values()) == 0  # every answer was recorded
    sft, pairs = frames["sft_dataset"], frames["dpo_pairs"]
    assert (sft.height, sft["instruction_id"].n_unique(), pairs.height) == (88, 13, 61)
    assert (sft["score"] >= AutoIFConfig().scoring.min_score).all() and (sft["pass_rate"] > 0.5).all()
    assert (pairs["chosen_pass_rate"] >= 0.5).all() and (pairs["rejected_pass_rate"] == 0).all()


def test_every_sft_response_passes_its_instructions_verifiers_when_judged_again(replayed):
    _, frames, _, sandbox = replayed
    funcs = {iid: g["func"].to_list() for (iid,), g in frames["verifiers"].group_by("instruction_id")}
    for row in frames["sft_dataset"].iter_rows(named=True):
        answer = row["messages"][1]["content"]
        verdicts = [v[0] for v in sandbox.judge([VerifierJob(f, [answer]) for f in funcs[row["instruction_id"]]])]
        assert pass_rate(verdicts)[2] > 0.5, row


def test_every_training_row_traces_to_a_seed(replayed):
    """Every SFT row and pair, and every instruction the supervisor wrote (no training row of
    the recording comes from one: they all stem from seeds), back to a seed line or to the
    augmentation completion in the ledger that wrote it."""
    home, frames, _, _ = replayed
    tracer = Tracer(home)
    for row_id in frames["sft_dataset"]["sample_id"].to_list() + frames["dpo_pairs"]["pair_id"].to_list():
        assert_traces_to_a_seed(tracer, row_id, via=("queries", "responses"))
    written = frames["augmented_instructions"].filter(pl.col("origin") == "augmented")["instruction_id"].to_list()
    assert written
    for instruction_id in written:
        assert_traces_to_a_seed(tracer, instruction_id, via=())


def _in_process(source: str, inputs: list[str]) -> list[str | None]:
    """What the AutoIF release does: exec() the verifier here and call it; None where that
    raised or returned a non-bool (the sandbox's error kinds are its own)."""
    namespace: dict = {"__name__": "verifier"}
    exec(source, namespace)
    out: list[str | None] = []
    for text in inputs:
        try:
            result = namespace["evaluate"](text)
        except Exception:
            result = None
        out.append(("pass" if result else "fail") if type(result) is bool else None)
    return out


@pytest.mark.parametrize("backend", ["docker", "host"])
def test_the_hardened_sandbox_judges_the_default_runs_verifiers_as_exec_does(replayed, backend):
    """The run's own verifiers over every response to their instruction (what
    response_verdicts judges), in each isolating backend and in-process: the same verdicts
    wherever in-process judged cleanly, and no error the sandbox added."""
    _, frames, _, sandbox = replayed
    if backend == "docker" and sandbox.backend != "docker":  # never under AUTOIF_CI=1 (conftest)
        unavailable("no Docker engine here")
    texts = {iid: g["response"].to_list() for (iid,), g in frames["responses"].join(
        frames["instruction_prompts"].select("prompt_id", "instruction_id"), on="prompt_id").group_by("instruction_id")}
    jobs = [VerifierJob(row["func"], texts[row["instruction_id"]]) for row in frames["verifiers"].iter_rows(named=True)
            if row["instruction_id"] in texts]  # instructions the NLI check dropped got no responses
    judged = SandboxResource(backend=backend, timeout_s=5.0).judge(jobs)
    compared = 0
    for job, verdicts in zip(jobs, judged):
        for expected, verdict in zip(_in_process(job.source, list(job.inputs)), verdicts):
            if expected is not None:
                assert verdict.kind == expected, (job.source, verdict)
                compared += 1
    assert compared >= 100


def _settled_after_first_wave(frames: dict, sandbox) -> tuple[set[str], set[str]]:
    """(settled, open) instructions of the recorded candidates, judged again on their first wave
    (an instruction none of whose first generations parsed is open: it is in no pool)."""
    candidates = frames["verifier_candidates"]
    config = AutoIFConfig()
    first = pool_candidates(candidates.filter(pl.col("sample_index") < config.verifiers.samples_per_wave)
                            .iter_rows(named=True))
    probed, _ = judge_pools(sandbox, first)
    done = {iid for iid, pool in first.items()
            if settled(cross_validate_pool(config.crossval, pool, probed[iid]), [row[:-1] for row in probed[iid]])}
    return done, set(frames["augmented_instructions"]["instruction_id"]) - done


def test_verifier_generations_stop_where_an_instructions_functions_already_agree(replayed):
    _, frames, metadata, sandbox = replayed
    cfg, meta = AutoIFConfig().verifiers, metadata["verifier_candidates"]
    candidates, n = frames["verifier_candidates"], frames["augmented_instructions"].height
    spread = {int(k): v for k, v in meta["instructions_by_generations"].items()}
    assert sum(spread.values()) == n and sum(k * v for k, v in spread.items()) == meta["rows_in"] <= meta["budget"]
    done, still_open = _settled_after_first_wave(frames, sandbox)
    asked_again = set(candidates.filter(pl.col("sample_index") >= cfg.samples_per_wave)["instruction_id"])
    assert done and asked_again and not done & asked_again and asked_again <= still_open
    # the budget left after every first wave bought second waves for the first open instructions in
    # frame order (the last one asked may have got part of one), and it is spent
    asked = -(-(meta["rows_in"] - cfg.samples_per_wave * n) // cfg.samples_per_wave)
    assert spread[cfg.samples_per_wave] == len(done) + len(still_open) - asked and 0 < asked < len(still_open)
    first_open = [iid for iid in frames["augmented_instructions"]["instruction_id"] if iid in still_open]
    assert asked_again <= set(first_open[:asked])
    assert 0 <= meta["budget"] - meta["rows_in"] < cfg.samples_per_wave


def _candidates_under(tmp_path, sandbox, verifiers: VerifierConfig) -> tuple[pl.DataFrame, dict]:
    """verifier_candidates of the recorded round again, from the recording, under other settings."""
    resources = {**replay_resources(tmp_path, sandbox), "autoif": AutoIFConfig(verifiers=verifiers)}
    result = dg.materialize(all_assets, partition_key=ROUND, resources=resources,
                            selection=["seed_instructions", "augmented_instructions", "verifier_candidates"])
    event = next(e for e in result.get_asset_materialization_events()
                 if e.asset_key.to_user_string() == "verifier_candidates")
    return (read_artifact(tmp_path / "assets", "verifier_candidates"),
            {k: v.value for k, v in event.materialization.metadata.items()})


def test_a_short_budget_spends_the_rest_on_the_first_open_instructions(replayed, tmp_path):
    _, frames, _, sandbox = replayed
    instructions = frames["augmented_instructions"]["instruction_id"].to_list()
    n = len(instructions)
    short, meta = _candidates_under(tmp_path, sandbox, VerifierConfig(samples_budget=2.25))
    assert meta["rows_in"] == meta["budget"] == int(2.25 * n)
    # what is left after every instruction's first wave buys second waves of 2, in frame order
    given_more = -(-(meta["budget"] - 2 * n) // 2)
    _, still_open = _settled_after_first_wave(frames, sandbox)
    first_open = [iid for iid in instructions if iid in still_open][:given_more]
    again = set(short.filter(pl.col("sample_index") >= 2)["instruction_id"])
    assert again and again <= set(first_open)


def test_one_wave_asks_every_instruction_for_every_sample(replayed, tmp_path):
    _, frames, _, sandbox = replayed
    n = frames["augmented_instructions"].height
    # two samples each: the recording holds every instruction's first two
    _, meta = _candidates_under(tmp_path, sandbox, VerifierConfig(samples_per_instruction=2, samples_per_wave=2))
    assert meta["instructions_by_generations"] == {"2": n} and meta["rows_in"] == 2 * n
    assert meta["waves"].count("\n") == 2  # header, rule, one wave
