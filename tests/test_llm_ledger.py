"""Completions in the ledger: what LLMResource.chat() answers from it, what it asks the model,
what it commits and when. The replay backend reads the ledger without an engine; the engine
tests record with the real one."""

import dataclasses
import math
import sqlite3
from types import SimpleNamespace

import pytest

from autoif_dagster.method import prompts
from autoif_dagster.method.parsing import expected_score, parse_score
from autoif_dagster.resources.ledger import Ledger, LedgerError, canonical_json, completion_key
from autoif_dagster.resources.llm import ChatRequest, LLMError, LLMResource
from autoif_dagster.resources.vllm_engine import VLLMGenerator
from autoif_dagster.resources.models import SMOKE_MODEL

REQUEST = ChatRequest([{"role": "user", "content": "Name a fruit, in lowercase."}], max_tokens=16,
                      temperature=0.7, top_p=0.95, seed=3, json_schema=None)


def record(llm: LLMResource, request: ChatRequest, text: str, run_id: str = "run-a") -> bytes:
    """Store a completion for `request` as `llm` would have."""
    identity = llm.request_identity(request)
    key = completion_key(identity)
    with Ledger(llm.ledger_path) as ledger:
        ledger.put_many("completions", [(key, text, "stop", 2, identity["model"], canonical_json(identity), run_id, 0.0, None)])
    return key


@pytest.fixture
def replay(tmp_path) -> LLMResource:
    return LLMResource(backend="replay", model=SMOKE_MODEL, ledger_path=str(tmp_path / "ledger.sqlite"))


def test_replay_answers_from_the_ledger_with_the_generation_and_its_run(replay):
    key = record(replay, REQUEST, "an apple")
    result = replay.chat([REQUEST, REQUEST], context=SimpleNamespace(run=SimpleNamespace(run_id="run-b"), log=None))
    assert [c.text for c in result.completions] == ["an apple", "an apple"]
    assert result.completions[0].generation_id == f"gen-{key.hex()}" and result.completions[0].run_id == "run-a"
    meta = result.metadata()
    assert (meta["ledger_hits"], meta["ledger_misses"], meta["llm_generated_tokens"]) == (2, 0, 0)
    assert meta["ledger_hits_by_run"] == {"run-a": 2}


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "user", "content": "Name a fruit, in lowercase!"}]},
    {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "Name a fruit, in lowercase."}]},
    {"max_tokens": 17}, {"temperature": 0.0}, {"top_p": 0.9}, {"seed": 4},
    {"json_schema": {"type": "object"}}, {"top_logprobs": 5},
])
def test_a_request_that_differs_in_anything_is_never_answered_from_the_ledger(replay, change):
    record(replay, REQUEST, "an apple")
    with pytest.raises(LLMError, match="replay: the ledger .* has no completion for 1 requests"):
        replay.chat([dataclasses.replace(REQUEST, **change)])


def test_another_model_or_dtype_is_another_request(replay):
    record(replay, REQUEST, "an apple")
    for other in (replay.model_copy(update={"model": "qwen2.5-coder-0.5b-instruct"}),
                  replay.model_copy(update={"dtype": "bfloat16"})):
        with pytest.raises(LLMError, match="no completion"):
            other.chat([REQUEST])
    # what does not change an output does not change the key
    same = replay.model_copy(update={"ledger_chunk": 1, "max_concurrency": 1, "request_timeout_s": 1.0})
    assert same.chat([REQUEST]).completions[0].text == "an apple"


def test_an_exported_run_replays_elsewhere_and_an_edited_request_is_another_request(replay, tmp_path):
    record(replay, REQUEST, "an apple")
    exported = tmp_path / "run.jsonl.gz"
    with Ledger(replay.ledger_path) as ledger:
        assert ledger.export_completions(exported) == 1
    elsewhere = replay.model_copy(update={"ledger_path": str(tmp_path / "elsewhere.sqlite")})
    with Ledger(elsewhere.ledger_path) as ledger:
        assert ledger.import_completions(exported) == 1
    assert elsewhere.chat([REQUEST]).completions[0].text == "an apple"

    import gzip
    import json
    line = json.loads(gzip.decompress(exported.read_bytes()))
    line["request"]["seed"] = 4  # an edited file: the completion is filed under the edited request
    edited = tmp_path / "edited.jsonl"
    edited.write_text(json.dumps(line) + "\n")
    third = replay.model_copy(update={"ledger_path": str(tmp_path / "third.sqlite")})
    with Ledger(third.ledger_path) as ledger:
        ledger.import_completions(edited)
    with pytest.raises(LLMError, match="no completion"):
        third.chat([REQUEST])
    assert third.chat([dataclasses.replace(REQUEST, seed=4)]).completions[0].text == "an apple"
    edited.write_text("{not json\n")
    with Ledger(third.ledger_path) as ledger, pytest.raises(LedgerError, match="line 1 is not an exported completion"):
        ledger.import_completions(edited)


def test_replay_without_a_usable_ledger_is_a_clear_error(tmp_path):
    with pytest.raises(LLMError, match="replay backend answers from a ledger: set ledger_path"):
        LLMResource(backend="replay", model=SMOKE_MODEL).chat([REQUEST])
    directory = tmp_path / "dir"
    directory.mkdir()
    with pytest.raises(LedgerError, match=f"{directory}.*cannot be opened|{directory}.*not a usable"):
        LLMResource(backend="replay", model=SMOKE_MODEL, ledger_path=str(directory)).chat([REQUEST])


@pytest.mark.engine
def test_the_engine_records_and_a_second_call_asks_nothing(llm, tmp_path, monkeypatch):
    ledgered = llm.model_copy(update={"ledger_path": str(tmp_path / "ledger.sqlite"), "ledger_chunk": 2})
    requests = [dataclasses.replace(REQUEST, seed=i) for i in range(5)]
    first = ledgered.chat(requests, context=SimpleNamespace(run=SimpleNamespace(run_id="run-1"), log=None))
    assert first.stats.ledger_misses == 5 and first.stats.tokens > 0
    with Ledger(ledgered.ledger_path) as ledger:
        assert ledger.count("completions") == 5
    # the second call must not reach the engine at all
    monkeypatch.setattr(VLLMGenerator, "generate", lambda *a: pytest.fail("the engine was asked"))
    second = ledgered.chat(requests)
    assert [c.text for c in second.completions] == [c.text for c in first.completions]
    assert second.stats.ledger_hits == 5 and second.stats.hits_by_run == {"run-1": 5}


@pytest.mark.engine
def test_token_alternatives_are_recorded_and_replayed_with_the_text(llm, tmp_path):
    """The quality judge's probabilities (its expected score) must survive the ledger exactly as
    its text does: a replayed run filters on the same scores."""
    ledgered = llm.model_copy(update={"ledger_path": str(tmp_path / "ledger.sqlite")})
    scoring = ChatRequest(prompts.quality_prompt("Answer in one word.", "Name a fruit.", "Apple."), max_tokens=24,
                          temperature=0.0, json_schema={"type": "object", "properties": {"score": {
                              "type": "integer", "minimum": 0, "maximum": prompts.SCORE_MAX}}, "required": ["score"]},
                          top_logprobs=20)
    fresh = ledgered.chat([scoring]).completions[0]
    assert fresh.finish_reason == "stop" and len(fresh.top_logprobs) == fresh.n_tokens
    assert all(0 < len(step) <= 21 for step in fresh.top_logprobs)  # the top 20 and the sampled token
    assert all(math.isfinite(lp) for step in fresh.top_logprobs for lp in step.values())  # tokens the schema forbids: left out
    written = parse_score(fresh.text)
    digits = {int(t.strip()): lp for step in fresh.top_logprobs for t, lp in step.items()
              if t.strip().isdigit() and len(t.strip()) == 1}
    assert written in digits and 0 <= expected_score(fresh.top_logprobs) <= prompts.SCORE_MAX
    replayed = ledgered.model_copy(update={"backend": "replay"}).chat([scoring]).completions[0]
    assert replayed.top_logprobs == fresh.top_logprobs and replayed.text == fresh.text
    exported = tmp_path / "run.jsonl"
    with Ledger(ledgered.ledger_path) as ledger:
        ledger.export_completions(exported)
    elsewhere = ledgered.model_copy(update={"backend": "replay", "ledger_path": str(tmp_path / "elsewhere.sqlite")})
    with Ledger(elsewhere.ledger_path) as ledger:
        ledger.import_completions(exported)
    assert elsewhere.chat([scoring]).completions[0].top_logprobs == fresh.top_logprobs


@pytest.mark.engine
def test_a_call_interrupted_midway_keeps_every_finished_completion(llm, tmp_path, monkeypatch):
    ledgered = llm.model_copy(update={"ledger_path": str(tmp_path / "ledger.sqlite"), "ledger_chunk": 100})
    requests = [dataclasses.replace(REQUEST, seed=10 + i) for i in range(5)]
    real = VLLMGenerator._step

    def interrupted_after_three(self, engine, batch, finished):
        seen = []

        def on_finished(i, c):
            if len(seen) == 3:
                raise KeyboardInterrupt  # the run is stopped with two requests still to finish
            seen.append(i)
            finished(i, c)
        real(self, engine, batch, on_finished)

    monkeypatch.setattr(VLLMGenerator, "_step", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        ledgered.chat(requests)
    with Ledger(ledgered.ledger_path) as ledger:
        assert ledger.count("completions") == 3  # committed on the way out, though the chunk was not full
    assert not ledgered.engine().llm_engine.has_unfinished_requests()  # the rest were aborted, not left queued
    monkeypatch.setattr(VLLMGenerator, "_step", real)
    again = ledgered.chat(requests)
    assert (again.stats.ledger_hits, again.stats.ledger_misses) == (3, 2)
    assert sqlite3.connect(ledgered.ledger_path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
