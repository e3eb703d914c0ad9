"""The whole graph materialized with the real embedded model (vLLM), the local sandbox and
the LLM-as-NLI judge, at the tiny scale. The model is weak, so the assertions are about what
must hold whatever it writes: every asset is materialized with its declared schema, every
row's parent ids resolve, and every stage's funnel adds up."""

import dagster as dg
import polars as pl
import pytest

from autoif_dagster.definitions import all_assets
from autoif_dagster.schemas import MODEL_ARTIFACTS, REFERENCES, SCHEMAS

DATA = set(SCHEMAS) - set(MODEL_ARTIFACTS)  # what the data graph (all_assets) makes
from autoif_dagster.resources.exports import ExportResource
from autoif_dagster.resources.io_manager import read_artifact
from autoif_dagster.trace import Tracer
from tests.lineage import assert_traces_to_a_seed
from tests.rounds import ROUND, context

# stages whose output rows and dropped rows together account for every input row
RECONCILED = ["augmented_instructions", "verifier_candidates", "verifiers", "test_cases", "back_translations",
              "nli_verdicts", "consistent_instructions", "queries", "responses", "response_verdicts",
              "quality_scores", "sft_dataset"]


def materialize(resources: dict, home) -> tuple[dict[str, pl.DataFrame], dict[str, dict]]:
    result = dg.materialize(all_assets, partition_key=ROUND, resources=resources)
    assert result.success
    frames = {name: read_artifact(home / "assets", name) for name in DATA}
    materializations = [ev.event_specific_data.materialization for ev in result.get_asset_materialization_events()]
    metadata = {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()} for m in materializations}
    return frames, metadata


def with_ledger(resources: dict, home) -> dict:
    """The LLM roles and the sandbox sharing one ledger in `home`, as `autoif run` sets them."""
    ledger = str(home / "ledger.sqlite")
    # built anew: Dagster re-creates a resource from its constructor arguments, which
    # model_copy(update=...) does not change
    return {**resources, **{name: type(resources[name])(**{**dict(resources[name]), "ledger_path": ledger})
                            for name in ("supervisor_llm", "policy_llm", "sandbox")}}


def llm_calls(metadata: dict[str, dict]) -> int:
    return sum(m.get("ledger_misses", 0) for m in metadata.values())


def sandbox_executions(metadata: dict[str, dict]) -> int:
    return sum(m["sandbox_calls"]["executed"] for m in metadata.values() if "sandbox_calls" in m)


@pytest.fixture
def run(resources, tmp_path):
    return materialize(with_ledger(resources, tmp_path), tmp_path)


@pytest.mark.engine
def test_whole_graph_on_the_embedded_model(run):
    frames, metadata = run
    assert set(metadata) == DATA
    for name, df in frames.items():
        assert df.schema == SCHEMAS[name], name
        assert metadata[name]["rows_out"] == df.height
    for name in RECONCILED:
        m = metadata[name]
        assert m["rows_in"] == m["rows_out"] + m["dropped_total"], (name, m)
    for child, col, parent, pcol in REFERENCES:
        missing = set(frames[child][col].to_list()) - set(frames[parent][pcol].to_list())
        assert not missing, f"{child}.{col} ids not in {parent}: {missing}"
    # the LLM stages really generated: tokens were counted by the engine
    assert metadata["verifier_candidates"]["llm_generated_tokens"] > 0
    assert metadata["verifier_candidates"]["rows_in"] == metadata["augmented_instructions"]["rows_out"] * 3
    assert metadata["queries"]["rows_out"] == 6


@pytest.mark.engine
def test_a_second_materialization_asks_nothing_and_every_row_traces(run, resources, tmp_path):
    """Run again on the same ledger: nothing is asked or executed, the rows are the same, and
    every verifier candidate and response traces to a seed (SmolLM2 at this scale writes
    candidates, but seldom a verifier that survives to give responses: the default-models
    test and the replayed default run trace training rows)."""
    frames, metadata = run
    assert llm_calls(metadata) > 0 and sandbox_executions(metadata) > 0
    again_frames, again = materialize(with_ledger(resources, tmp_path), tmp_path)
    assert llm_calls(again) == 0 and sandbox_executions(again) == 0
    for name in ("responses", "verifiers", "sft_dataset"):
        assert again_frames[name].equals(frames[name]), name
    tracer = Tracer(tmp_path)
    assert frames["verifier_candidates"].height > 0
    for row_id in frames["verifier_candidates"]["candidate_id"].to_list():
        assert_traces_to_a_seed(tracer, row_id, via=())
    for response_id in frames["responses"]["response_id"].to_list():
        assert_traces_to_a_seed(tracer, response_id)


def asked(ledger_path) -> dict[bytes, str]:
    """Every stored completion's key and the text of its request's messages."""
    import json
    import sqlite3

    with sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True) as db:
        return {key: "\n".join(m["content"] for m in json.loads(request)["messages"])
                for key, request in db.execute("SELECT key, request FROM completions")}


def texts(frames: dict[str, pl.DataFrame]) -> set[str]:
    """Every string cell of every frame: the content a request can be about."""
    return {v for df in frames.values() for col, kind in df.schema.items() if kind == pl.String
            for v in df[col].drop_nulls().to_list() if len(v) >= 8}


@pytest.mark.engine
def test_a_prompt_edit_reruns_exactly_what_is_downstream_and_asks_only_new_prompts(resources, tmp_path, monkeypatch):
    """The augmentation prompt changes: only `augmented_instructions` is stale, the refresh runs
    it and what is downstream of it and nothing upstream, the augmentation is asked again, and
    every other request the refresh sends is about content the first run did not have: the
    verifier prompts of instructions both runs hold come from the ledger, exactly, and only the
    new instructions' are asked. (The edit is upstream of the verifiers because SmolLM2 keeps
    too few verifiers for the stages after them to have inputs at this scale.)"""
    from autoif_dagster.definitions import ASSET_MODULES
    from autoif_dagster.method import prompts
    from autoif_dagster.versions import stale_assets, to_refresh, with_code_versions

    from autoif_dagster.config import AugmentConfig

    seeds = tmp_path / "seeds.txt"  # two seeds and room for every new instruction: none is sampled away
    seeds.write_text("Write your entire answer in lowercase letters\nDo not use any commas in your answer\n")
    config = type(resources["autoif"])(**{**dict(resources["autoif"]), "seeds_path": str(seeds),
                                          "augment": AugmentConfig(rounds=1, examples_per_round=2, max_instructions=12)})
    res = with_ledger({**resources, "autoif": config}, tmp_path)
    ledger = res["supervisor_llm"].ledger_path
    edit = " Keep each instruction short."
    with dg.instance_for_test() as instance:
        assert dg.materialize(all_assets, partition_key=ROUND, resources=res, instance=instance).success
        before = {name: read_artifact(tmp_path / "assets", name) for name in DATA}
        assert stale_assets(instance, dg.Definitions(assets=all_assets, resources=res), ROUND) == {}

        monkeypatch.setattr(prompts, "AUGMENT_TASK", prompts.AUGMENT_TASK + edit)
        edited = with_code_versions(dg.load_assets_from_modules(ASSET_MODULES))
        defs = dg.Definitions(assets=edited, resources=res)
        stale = stale_assets(instance, defs, ROUND)
        assert list(stale) == [dg.AssetKey("augmented_instructions")], stale
        keys = to_refresh(stale, defs)
        upstream = {"seed_instructions", "queries"}
        assert {k.to_user_string() for k in keys} == DATA - upstream
        first = asked(ledger)
        result = dg.materialize(edited, partition_key=ROUND, selection=keys, resources=res, instance=instance)
        assert result.success
        meta = {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
                for m in (ev.event_specific_data.materialization for ev in result.get_asset_materialization_events())}
        assert set(meta) == DATA - upstream  # nothing upstream re-ran
        augmented = meta["augmented_instructions"]
        assert augmented["ledger_misses"] == augmented["llm_requests"] > 0  # every augmentation prompt is new
        after = {name: read_artifact(tmp_path / "assets", name) for name in DATA}
        ids = [set(frames["augmented_instructions"]["instruction_id"]) for frames in (before, after)]
        samples = res["autoif"].verifiers.samples_per_instruction
        candidates = meta["verifier_candidates"]
        # the seeds are kept, so their verifier prompts must be ledger hits; whatever new instructions
        # the edited prompt brought (SmolLM2 may bring none) must be asked, and nothing else
        assert ids[0] & ids[1]
        assert (candidates["ledger_hits"], candidates["ledger_misses"]) == (samples * len(ids[1] & ids[0]),
                                                                            samples * len(ids[1] - ids[0]))
        new_content = texts(after) - texts(before)
        new = {key: text for key, text in asked(ledger).items() if key not in first}
        assert len(new) == sum(m.get("ledger_misses", 0) for m in meta.values())
        for text in new.values():
            assert edit in text or any(t in text for t in new_content), f"asked again without new content: {text[:300]}"
        assert stale_assets(instance, defs, ROUND) == {}


@pytest.mark.engine
def test_quality_scores_with_the_real_model(llm, tiny_config):
    """The embedded model rarely writes responses that pass its own verifiers, so the scoring
    stage is exercised here on responses that passed by construction."""
    from autoif_dagster.assets.responses import quality_scores
    from tests.rounds import frame

    prompts = frame("instruction_prompts", [
        {"prompt_id": "p1", "instruction_id": "i1", "query_id": "q1", "instruction": "Do not use any commas",
         "query": "How do I make tea?", "prompt": "How do I make tea?\n\nFollow this instruction strictly in your answer: Do not use any commas"}])
    texts = ["Boil water then pour it over the tea leaves and wait three minutes.", "Tea is nice.", "I like trains"]
    responses = frame("responses", [{"response_id": f"r{i}", "prompt_id": "p1", "sample_index": i, "with_instruction": True, "model": "m",
                                     "response": t, "finish_reason": "stop"} for i, t in enumerate(texts)])
    verdicts = frame("response_verdicts", [{"response_id": f"r{i}", "prompt_id": "p1", "n_verifiers": 1, "n_passed": 1,
                                            "n_errors": 0, "pass_rate": 1.0} for i in range(3)])
    out = quality_scores(context(), tiny_config, llm, responses, verdicts, prompts)
    scores = out.value
    assert scores.height + out.metadata["dropped_total"].value == 3
    assert scores.height >= 2  # structured output: the JSON parses
    assert scores["score"].is_between(0, 10).all()
    assert out.metadata["llm_requests"].value == 3
    # the judge's probabilities were read for every score: the expected score beside the digit
    assert scores["expected_score"].is_not_null().all() and scores["expected_score"].is_between(0, 9).all()
    assert "expected_score_histogram" in out.metadata


@pytest.mark.engine
def test_default_models_end_to_end(tmp_path, queries_file, sandbox):
    """The default models (definitions.default_resources) through the whole graph at a small
    scale with the paper's thresholds: every stage runs on the real models, the roles share
    one engine, the kept verifiers are neither accept-all nor reject-all, and every SFT
    response, re-judged by its instruction's verifiers outside the graph, passes them."""
    from autoif_dagster.config import AugmentConfig, AutoIFConfig, BackTranslationConfig, QueryConfig, ResponseConfig, Sampling, VerifierConfig
    from autoif_dagster.definitions import default_resources
    from autoif_dagster.method.selection import pass_rate
    from autoif_dagster.resources import vllm_engine
    from autoif_dagster.resources.io_manager import ParquetIOManager
    from autoif_dagster.resources.sandbox import VerifierJob

    seeds = tmp_path / "seeds.txt"
    seeds.write_text("Write your entire answer in lowercase letters\nDo not use any commas in your answer\n"
                     "Include at least one question mark in your answer\n")
    config = AutoIFConfig(
        seeds_path=str(seeds), queries_path=queries_file,
        augment=AugmentConfig(rounds=1, examples_per_round=3, new_per_round=1, max_instructions=4),
        verifiers=VerifierConfig(samples_per_instruction=2),
        back_translation=BackTranslationConfig(per_instruction=1),
        queries=QueryConfig(pool_size=6, per_instruction=2),
        responses=ResponseConfig(samples_per_prompt=2, sampling=Sampling(temperature=0.7, max_tokens=160)),
    )
    resources = {**default_resources(), "autoif": config, "sandbox": sandbox,
                 "io_manager": ParquetIOManager(base_dir=str(tmp_path / "assets")),
                 "exports": ExportResource(directory=str(tmp_path / "exports"))}
    frames, meta = materialize(with_ledger(resources, tmp_path), tmp_path)
    # something for the loops below to re-judge and trace
    assert frames["responses"].height > 0 and frames["sft_dataset"].height > 0
    assert len(vllm_engine._ENGINES) == 1
    assert frames["responses"]["model"].unique().to_list() in ([], [resources["policy_llm"].model])
    assert meta["nli_verdicts"]["nli_backend"] == "llm"
    assert meta["verifier_candidates"]["llm_generated_tokens"] > 0
    probes = meta["verifiers"]["probes_kept_verifiers"]
    assert probes["accept_every_test_input"] == probes["reject_every_test_input"] == 0
    for child, col, parent, pcol in REFERENCES:
        assert set(frames[child][col].to_list()) <= set(frames[parent][pcol].to_list()), (child, col)
    # re-judge every SFT response with its instruction's verifiers, outside the graph
    sft, verifiers = frames["sft_dataset"], frames["verifiers"]
    funcs = {iid: group["func"].to_list() for (iid,), group in verifiers.group_by("instruction_id")}
    for row in sft.iter_rows(named=True):
        answer = row["messages"][1]["content"]
        verdicts = [v[0] for v in sandbox.judge([VerifierJob(f, [answer]) for f in funcs[row["instruction_id"]]])]
        assert pass_rate(verdicts)[2] > 0.5, row
    texts = sft.select(pl.col("messages").list.get(0).struct.field("content").alias("prompt"),
                       pl.col("messages").list.get(1).struct.field("content").alias("response"))
    assert texts.is_unique().all()  # one row per prompt and response text
    tracer = Tracer(tmp_path)
    for row_id in sft["sample_id"].to_list() + frames["dpo_pairs"]["pair_id"].to_list():
        assert_traces_to_a_seed(tracer, row_id, via=("queries", "responses"))


@pytest.mark.engine
def test_vllm_reads_the_converted_checkpoint_as_transformers_does():
    """The converted Qwen checkpoint's config is written by transformers 5 (`rope_parameters`,
    `layer_types`); a misread field (say the rope base) would not fail loudly in vLLM, it
    would make the model worse. Greedy decoding must agree token for token. (Placed after the
    default-models test, whose last engine is this one.)"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autoif_dagster.resources.llm import ChatRequest, LLMResource
    from autoif_dagster.resources.models import DEFAULT_SUPERVISOR, resolve_model

    messages = [{"role": "user", "content": "Write a Python function that reverses a string."}]
    # float32 like transformers below: dtype "auto" is bfloat16 on a CPU with native bf16, and
    # bf16 rounding can flip a greedy token without any misread config
    llm = LLMResource(model=DEFAULT_SUPERVISOR, dtype="float32")
    vllm_out = llm.chat([ChatRequest(messages, max_tokens=12, temperature=0.0)]).completions[0]
    path = resolve_model(DEFAULT_SUPERVISOR)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    hf_text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert vllm_out.text == hf_text


CHILD = """
import sys, dagster as dg
from autoif_dagster.definitions import all_assets
from autoif_dagster.config import AutoIFConfig, ResponseConfig
from autoif_dagster.resources.exports import ExportResource
from autoif_dagster.resources.io_manager import ParquetIOManager
from autoif_dagster.resources.llm import LLMResource
from autoif_dagster.resources.vllm_engine import shutdown_engines
from autoif_dagster.resources.nli import NLIResource
from autoif_dagster.resources.sandbox import SandboxResource
from autoif_dagster.rounds import FIRST_ROUND as ROUND
home = sys.argv[1]
llm = LLMResource(model="smollm2-135m-instruct", ledger_path=home + "/ledger.sqlite", ledger_chunk=2)
result = dg.materialize(all_assets, partition_key=ROUND, selection=["responses"], resources={
    "autoif": AutoIFConfig(responses=ResponseConfig(samples_per_prompt=4)), "policy_llm": llm,
    "supervisor_llm": llm, "nli": NLIResource(), "sandbox": SandboxResource(backend="local"),  # unused by this asset
    "io_manager": ParquetIOManager(base_dir=home + "/assets"), "exports": ExportResource(directory=home + "/exports")})
for event in result.get_asset_materialization_events():
    m = event.event_specific_data.materialization
    print("responses", m.metadata["ledger_hits"].value, m.metadata["ledger_misses"].value, flush=True)
shutdown_engines()  # as `autoif run` does
"""


@pytest.mark.engine
def test_a_run_killed_during_responses_loses_no_finished_call(tmp_path):
    """SIGKILL while the responses stage is generating (its first chunks of two committed),
    then the same run again: every completion committed before the kill is served by the
    ledger, and only the rest is generated."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from tests.rounds import frame

    (tmp_path / "assets" / "instruction_prompts").mkdir(parents=True)
    queries = ["How do I make tea?", "Why is the sky blue?", "Give me a tip for learning the guitar."]
    frame("instruction_prompts", [
        {"prompt_id": f"prm-{i}", "instruction_id": "ins-0", "query_id": f"q{i}", "instruction": "Answer in lowercase",
         "query": q, "prompt": f"{q}\n\nFollow this instruction strictly in your answer: Answer in lowercase"}
        for i, q in enumerate(queries)
    ]).write_parquet(tmp_path / "assets" / "instruction_prompts" / f"{ROUND}.parquet")  # as the IO manager files a round

    def committed() -> int:
        try:
            db = sqlite3.connect(f"file:{tmp_path}/ledger.sqlite?mode=ro", uri=True, timeout=5)
            return db.execute("SELECT count(*) FROM completions").fetchone()[0]
        except sqlite3.Error:
            return 0

    def start() -> subprocess.Popen:
        # its own process group: the kill takes the run with its engine processes, as stopping
        # a run's container or `kill -9 -PGID` does (vLLM's engine outlives a parent killed alone)
        return subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, start_new_session=True)

    child = start()
    try:
        deadline = time.time() + 600
        while committed() < 2 and child.poll() is None and time.time() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    before = committed()
    assert 2 <= before < 15, before  # 3 prompts x (4 + 1 query-alone) requests; killed midway
    rerun = start()
    try:
        line = next(line for line in rerun.stdout if line.startswith("responses "))
        assert rerun.wait(timeout=300) == 0
    finally:
        if rerun.poll() is None:
            os.killpg(rerun.pid, signal.SIGKILL)
    _, hits, misses = line.split()
    assert int(hits) == before and int(misses) == 15 - before
