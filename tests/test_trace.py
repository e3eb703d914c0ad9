"""`autoif trace`: a hand-built home (artifacts as the assets write them, one ledger entry)
traced from a training sample back to its instruction and query."""

import json

import pytest

from autoif_dagster import cli
from autoif_dagster.resources.ledger import Ledger, canonical_json
from autoif_dagster.schemas import content_id, frame
from autoif_dagster.trace import TraceError, Tracer, render

INSTRUCTION = "Answer in lowercase letters only"
QUERY = "Name a fruit."


@pytest.fixture
def home(tmp_path):
    gen = "gen-" + "ab" * 16
    ins = content_id("instruction", INSTRUCTION)
    ver = content_id("verifier", ins, "def evaluate(r): return r.islower()")
    qry = "q7"  # a query id of the user's own file: no kind prefix
    prm = content_id("prompt", ins, qry)
    resp = content_id("response", prm, "m", 0, "an apple")
    sft = content_id("sft", resp)
    prompt = f"{QUERY}\n\nFollow this instruction strictly in your answer: {INSTRUCTION}"
    frames = {
        "augmented_instructions": [{"instruction_id": ins, "instruction": INSTRUCTION, "origin": "augmented",
                                    "generation_id": gen}],
        "verifiers": [{"verifier_id": ver, "instruction_id": ins, "candidate_ids": ["cand-0"],
                       "func": "def evaluate(r): return r.islower()", "accuracy": 1.0}],
        "queries": [{"query_id": qry, "query": QUERY}],
        "instruction_prompts": [{"prompt_id": prm, "instruction_id": ins, "query_id": qry, "instruction": INSTRUCTION,
                                 "query": QUERY, "prompt": prompt}],
        "responses": [{"response_id": resp, "prompt_id": prm, "sample_index": 0, "with_instruction": True, "model": "m",
                       "generation_id": None, "response": "an apple", "finish_reason": "stop"}],
        "response_verdicts": [{"response_id": resp, "prompt_id": prm, "n_verifiers": 1, "n_passed": 1, "n_errors": 0,
                               "pass_rate": 1.0, "verdicts": [{"verifier_id": ver, "kind": "pass"}]}],
        "sft_dataset": [{"sample_id": sft, "prompt_id": prm, "response_id": resp, "instruction_id": ins, "query_id": qry,
                         "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "an apple"}],
                         "pass_rate": 1.0, "score": 9}],
    }
    (tmp_path / "assets").mkdir()
    for name, rows in frames.items():
        frame(name, rows).write_parquet(tmp_path / "assets" / f"{name}.parquet")
    request = {"model": "embedded:m", "messages": [{"role": "user", "content": "Write new instructions."}]}
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.put_many("completions", [(bytes.fromhex(gen[4:]), f"1. {INSTRUCTION}", "stop", 9, "embedded:m",
                                         canonical_json(request), "run-1234abcd", 0.0, None)])
    return tmp_path, sft, ins, qry, ver


def test_a_training_sample_traces_to_its_instruction_query_and_generation(home):
    path, sft, ins, qry, ver = home
    tree = Tracer(path).trace(sft)
    assert (tree["asset"], tree["id"]) == ("sft_dataset", sft)
    nodes = {}

    def walk(node):
        nodes[node["id"]] = node
        for parent in node.get("parents", []):
            walk(parent)

    walk(tree)
    assert nodes[ins]["asset"] == "augmented_instructions" and nodes[qry]["asset"] == "queries"
    assert nodes[ins]["generation"]["text"] == f"1. {INSTRUCTION}" and nodes[ins]["generation"]["run_id"] == "run-1234abcd"
    assert nodes[ins]["details"]["verifiers"][0]["verifier_id"] == ver
    response = next(n for n in nodes.values() if n["asset"] == "responses")
    assert response["details"]["response_verdicts"][0]["verdicts"] == [{"verifier_id": ver, "kind": "pass"}]
    assert not any(n.get("missing") for n in nodes.values())
    text = render(tree)
    assert INSTRUCTION in text and "wrote: 1. Answer in lowercase" in text and "generation by embedded:m" in text


def test_the_cli_prints_text_or_json_and_names_bad_ids(home, capsys):
    path, sft, ins, _, _ = home
    assert cli.main(["trace", sft, "--home", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == sft
    assert cli.main(["trace", ins, "--home", str(path)]) == 0
    assert INSTRUCTION in capsys.readouterr().out
    assert cli.main(["trace", "resp-0000000000000000", "--home", str(path)]) == 2
    assert "no row with id 'resp-0000000000000000'" in capsys.readouterr().err
    assert cli.main(["trace", "not an id", "--home", str(path)]) == 2
    assert "malformed id 'not an id'" in capsys.readouterr().err


def test_a_home_without_artifacts_is_named(tmp_path):
    with pytest.raises(TraceError, match=f"no artifacts in {tmp_path}"):
        Tracer(tmp_path)


def test_the_trace_job_shows_the_chain_in_the_ui(home, monkeypatch):
    from autoif_dagster.definitions import trace_job

    path, sft, _, _, _ = home
    monkeypatch.setenv("AUTOIF_HOME", str(path))
    result = trace_job.execute_in_process(run_config={"ops": {"trace_row": {"config": {"id": sft}}}})
    assert result.success
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = event.event_specific_data.metadata
    assert INSTRUCTION in metadata["trace"].value and metadata["trace_json"].value["id"] == sft
    bad = trace_job.execute_in_process(run_config={"ops": {"trace_row": {"config": {"id": "resp-00"}}}},
                                       raise_on_error=False)
    assert not bad.success
