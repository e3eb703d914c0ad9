"""Asset checks: their rules on hand-built frames, and blocking checks stopping a real run
(`dg.materialize` of a small graph) before anything downstream of bad data runs."""

import json

import dagster as dg
import polars as pl
import pytest

from autoif_dagster import checks
from autoif_dagster.config import AutoIFConfig
from autoif_dagster.resources.io_manager import ParquetIOManager
from tests.rounds import ROUND, frame

NO_E = "def evaluate(response):\n    return 'e' not in response.lower()"
ANYTHING = "def evaluate(response):\n    return True"


def _verifiers(*funcs: str) -> pl.DataFrame:
    return frame("verifiers", [{"verifier_id": f"ver-{i}", "instruction_id": "ins-e", "candidate_ids": ["c"],
                                "func": f, "accuracy": 1.0} for i, f in enumerate(funcs)])


def _cases() -> pl.DataFrame:
    return frame("test_cases", [{"case_id": f"case-{i}", "instruction_id": "ins-e", "input": text, "output": label,
                                 "agreement": 1.0} for i, (text, label) in enumerate([("A cat", True), ("The sky", False)])])


def _sft(*answers: str) -> pl.DataFrame:
    return frame("sft_dataset", [
        {"sample_id": f"sft-{i}", "prompt_id": "prm-1", "response_id": f"resp-{i}", "instruction_id": "ins-e",
         "query_id": "qry-1", "messages": [{"role": "user", "content": "Name an animal. No letter e."},
                                           {"role": "assistant", "content": a}], "pass_rate": 1.0, "score": 9}
        for i, a in enumerate(answers)])


def _pairs(chosen_rate: float, rejected_rate: float, same_text: bool = False) -> pl.DataFrame:
    return frame("dpo_pairs", [{"pair_id": "pair-1", "prompt_id": "prm-1", "chosen_response_id": "resp-1",
                                "rejected_response_id": "resp-2", "prompt": "p", "chosen": "A cat",
                                "rejected": "A cat" if same_text else "The sky", "chosen_pass_rate": chosen_rate,
                                "rejected_pass_rate": rejected_rate, "rejected_with_instruction": True}])


# ---------------------------------------------------------------- the rules


def test_schema_problems_name_the_schema_and_the_ids():
    good = _verifiers(NO_E, ANYTHING)
    assert checks.schema_problems("verifiers", good) == []
    assert "repeated" in checks.schema_problems("verifiers", pl.concat([good, good]))[0]
    nulls = good.with_columns(pl.lit(None, dtype=pl.String).alias("verifier_id"))
    assert checks.schema_problems("verifiers", nulls)[0] == "2 rows without a verifier_id"
    assert "not the declared" in checks.schema_problems("verifiers", good.drop("accuracy"))[0]


def test_pairs_out_of_order_and_collapse():
    assert checks.unordered_pairs(_pairs(1.0, 0.0), 0.5, 0.0) == []
    assert checks.unordered_pairs(_pairs(0.4, 0.0), 0.5, 0.0) == ["pair-1"]  # chosen below the bar
    assert checks.unordered_pairs(_pairs(1.0, 0.5), 0.5, 0.0) == ["pair-1"]  # rejected above its cap
    assert checks.unordered_pairs(_pairs(1.0, 0.0, same_text=True), 0.5, 0.0) == ["pair-1"]
    assert not checks.collapsed(10, None) and not checks.collapsed(10, 19) and checks.collapsed(9, 19)
    assert not checks.collapsed(0, 0)


# ---------------------------------------------------------------- blocking checks in a run


def _graph(values: dict[str, pl.DataFrame]):
    """Source-like assets that return hand-built frames, one downstream asset of each, and
    the checks: which of them ran shows whether a check blocked."""
    assets = []
    for name, value in values.items():
        def make(name=name, value=value):
            @dg.asset(name=name, partitions_def=checks.partitions_of(name))  # as the real asset is
            def source() -> dg.Output[pl.DataFrame]:
                return dg.Output(value, metadata={"dagster/row_count": value.height})  # as funnel() records
            return source
        assets.append(make())
    downstream = []
    for name in ("verifiers", "sft_dataset", "dpo_pairs"):
        if name in values:
            def make_after(name=name):
                @dg.asset(name=f"after_{name}", ins={"upstream": dg.AssetIn(name, metadata={"allow_missing_partitions": True})})
                def after(upstream: pl.DataFrame) -> pl.DataFrame:
                    return upstream.head(0)
                return after
            downstream.append(make_after())
    wanted = [c for c in checks.all_checks if {k.asset_key.path[-1] for k in c.check_keys} <= set(values)
              and all(dep.path[-1] in values for dep in c.keys_by_input_name.values())]
    return assets + downstream, wanted


def _run(tmp_path, sandbox, values, instance=None):
    assets, wanted = _graph(values)
    resources = {"autoif": AutoIFConfig(), "sandbox": sandbox, "io_manager": ParquetIOManager(base_dir=str(tmp_path))}
    result = dg.materialize([*assets, *wanted], resources=resources, raise_on_error=False, instance=instance,
                            partition_key=ROUND)
    done = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    evaluations = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            evaluations[(data.asset_check_key.name, data.asset_key.path[-1])] = data.passed
    return result, done, evaluations


def test_good_data_passes_every_check(tmp_path, sandbox):
    result, done, evaluations = _run(tmp_path, sandbox, {
        "verifiers": _verifiers(NO_E), "test_cases": _cases(), "sft_dataset": _sft("A cat"),
        "dpo_pairs": _pairs(1.0, 0.0)})
    assert result.success
    assert {"after_verifiers", "after_sft_dataset", "after_dpo_pairs"} <= done
    assert evaluations and all(evaluations.values())
    assert ("sft_responses_pass_their_verifiers", "sft_dataset") in evaluations


# Bad verifiers also stop the SFT data: its re-judging check reads them.
VERIFIERS_DOWN = {"after_verifiers", "after_sft_dataset"}


@pytest.mark.parametrize("bad, stopped, check", [
    ({"verifiers": _verifiers(NO_E, ANYTHING)}, VERIFIERS_DOWN, "no_verifier_accepts_everything"),
    ({"sft_dataset": _sft("A cat", "The elephant")}, {"after_sft_dataset"}, "sft_responses_pass_their_verifiers"),
    ({"sft_dataset": _sft()}, {"after_sft_dataset"}, "not_empty"),
    ({"dpo_pairs": _pairs(1.0, 0.5)}, {"after_dpo_pairs"}, "chosen_beats_rejected"),
    ({"verifiers": pl.concat([_verifiers(NO_E), _verifiers(NO_E)])}, VERIFIERS_DOWN, "schema_and_ids"),
], ids=["accepts-everything", "sft-fails-verifiers", "empty", "pair-out-of-order", "repeated-ids"])
def test_each_blocking_check_stops_a_bad_run(tmp_path, sandbox, bad, stopped, check):
    values = {"verifiers": _verifiers(NO_E), "test_cases": _cases(), "sft_dataset": _sft("A cat"),
              "dpo_pairs": _pairs(1.0, 0.0), **bad}
    result, done, evaluations = _run(tmp_path, sandbox, values)
    assert not result.success
    failed = {key for key, passed in evaluations.items() if not passed}
    assert any(name == check for name, _ in failed), evaluations
    assert not stopped & done  # downstream of the bad asset did not run
    assert {"after_verifiers", "after_sft_dataset", "after_dpo_pairs"} - stopped <= done  # the rest did


def test_a_collapsed_yield_blocks(tmp_path, sandbox):
    instance = dg.DagsterInstance.ephemeral()
    many = _sft(*[f"A cat, {i}" for i in range(6)])
    result, done, _ = _run(tmp_path, sandbox, {"verifiers": _verifiers(NO_E), "sft_dataset": many}, instance)
    assert result.success and "after_sft_dataset" in done
    result, done, evaluations = _run(tmp_path, sandbox, {"verifiers": _verifiers(NO_E), "sft_dataset": _sft("A cat")},
                                     instance)
    assert not result.success and evaluations[("yield_held", "sft_dataset")] is False
    assert "after_sft_dataset" not in done


def test_the_newest_round_collapsing_blocks(tmp_path, sandbox):
    """Two rounds in the combined dataset: the newest yielded 1 row against the 6 before it."""
    many = _sft(*[f"A cat, {i}" for i in range(6)])
    one = frame("sft_dataset", [{**_sft("A cat, again").row(0, named=True), "round": "2026-11-02"}])
    assert checks.latest_rounds(pl.concat([many, one])) == (("2026-11-02", 1), (ROUND, 6))
    result, done, evaluations = _run(tmp_path, sandbox, {"verifiers": _verifiers(NO_E), "sft_dataset": pl.concat([many, one])})
    assert not result.success and evaluations[("yield_held", "sft_dataset")] is False
    assert "after_sft_dataset" not in done


# ---------------------------------------------------------------- verifiers against reference checkers

NO_COMMA = {"benchmark": "ifeval", "checker": "punctuation:no_comma", "kwargs": {}}


def _seeds(*references: dict | None) -> pl.DataFrame:
    return frame("seed_instructions", [{"instruction_id": f"ins-{i}", "instruction": f"Seed {i}",
                                        "reference": None if r is None else json.dumps(r)}
                                       for i, r in enumerate(references)])


def _candidates(*texts: str) -> pl.DataFrame:
    return frame("verifier_candidates", [{"candidate_id": "cand-1", "instruction_id": "ins-0", "sample_index": 0,
                                          "generation_id": "gen-1", "raw": "{}", "func": "",
                                          "cases": [{"input": t, "output": True} for t in texts]}])


def _of(instruction_id: str, *funcs: str) -> pl.DataFrame:
    return frame("verifiers", [{"verifier_id": f"ver-{instruction_id}-{i}", "instruction_id": instruction_id,
                                "candidate_ids": ["c"], "func": f, "accuracy": 1.0} for i, f in enumerate(funcs)])


def evaluate(body: str) -> str:
    return f"def evaluate(response):\n    return {body}\n"


def test_hand_made_verifiers_get_their_balanced_accuracy_against_the_reference(sandbox):
    """Two texts and their comma edits make the pool: 'Tea, please.', 'Tea please.', 'Tea
    please., and so on.', 'Plain tea', 'Plain tea, and so on.' (IFEval: pass, fail, pass, fail,
    fail). Right: 1; accepting everything: 0.5; too strict (also short): 0.75; too loose (only
    a leading comma counts): 2/3. A verifier that raises counts its errors as fails."""
    verifiers = _of("ins-0", evaluate("',' not in response"), evaluate("True"),
                    evaluate("',' not in response and len(response) < 10"),
                    evaluate("not response.startswith('Tea,')"), evaluate("1 / 0"))
    rows, problems = checks.reference_audit(sandbox, verifiers, _seeds(NO_COMMA), _candidates("Tea, please.", "Plain tea"))
    assert problems == []
    got = {r["verifier_id"]: (r["balanced_accuracy"], r["texts"], r["errors"]) for r in rows}
    assert got == {"ver-ins-0-0": (1.0, 5, 0), "ver-ins-0-1": (0.5, 5, 0), "ver-ins-0-2": (0.75, 5, 0),
                   "ver-ins-0-3": (pytest.approx(2 / 3), 5, 0), "ver-ins-0-4": (0.5, 5, 5)}


def test_references_that_do_not_fit_are_named_and_unmapped_instructions_are_left_out(sandbox):
    bad_kwargs = {**NO_COMMA, "kwargs": {"comma_count": 2}}
    unknown = {"benchmark": "ifeval", "checker": "punctuation:no_semicolon", "kwargs": {}}
    verifiers = pl.concat([_of(f"ins-{i}", evaluate("True")) for i in range(4)])
    rows, problems = checks.reference_audit(sandbox, verifiers, _seeds(NO_COMMA, bad_kwargs, unknown, None),
                                            _candidates("Tea, please."))
    assert [r["instruction_id"] for r in rows] == ["ins-0", "ins-1", "ins-2"]  # ins-3 has no reference
    assert [r["texts"] for r in rows] == [3, 0, 0] and rows[1]["balanced_accuracy"] is None
    assert len(problems) == 2
    assert "punctuation:no_comma of ins-1: TypeError" in problems[0] and "comma_count" in problems[0]
    assert "'punctuation:no_semicolon' is not one of ifeval's checkers" in problems[1]


def test_the_reference_audit_warns_in_a_run_and_blocks_nothing(tmp_path, sandbox):
    values = {"verifiers": _of("ins-0", evaluate("',' not in response"), evaluate("True")), "test_cases": _cases(),
              "seed_instructions": _seeds(NO_COMMA), "verifier_candidates": _candidates("Tea, please.", "Plain tea")}
    result, done, evaluations = _run(tmp_path, sandbox, values)
    assert result.success and "after_verifiers" in done
    assert evaluations[("verifiers_agree_with_reference_checkers", "verifiers")] is False
    (data,) = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
               and e.event_specific_data.asset_check_key.name == "verifiers_agree_with_reference_checkers"]
    assert data.severity == dg.AssetCheckSeverity.WARN
    assert data.metadata["verifier_precision"].value == 0.5 and data.metadata["audited_verifiers"].value == 2
    assert "| 0.5 | Seed 0 |" in data.metadata["audit"].value
