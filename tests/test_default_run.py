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

from autoif_dagster.config import AutoIFConfig
from autoif_dagster.definitions import all_assets
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
    The recording (round 2026-11-01, bf16 on an AMD EPYC Zen 4; the consistency judge on the
    supervisor's probabilities and the lexical rules, 8 augmentation requests, 4 verifier
    generations, 6 queries per instruction; recorded cold on 2026-12-06, made again warm on
    2026-12-07 when augmentation doubled: the new requests went to the engine) gives 85 SFT rows
    from 9 instructions and 56 DPO pairs (issue #22 asks 30 from 8, and 15; at 4 augmentation
    requests 55 from 6 and 43; the analysis-first quality judge kept 42 rows and 27 pairs). The
    same completions always give the same rows, so anything else is a change of the code's: a
    drop is a regression; a gain is written down here once it is understood."""
    _, frames, metadata, _ = replayed
    assert sum(m.get("ledger_misses", 0) for m in metadata.values()) == 0  # every answer was recorded
    sft, pairs = frames["sft_dataset"], frames["dpo_pairs"]
    assert (sft.height, sft["instruction_id"].n_unique(), pairs.height) == (85, 9, 56)
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
