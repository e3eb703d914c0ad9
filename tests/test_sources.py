"""Bad seed and query files fail with an error that names the file and the problem."""

import json

import polars as pl
import pytest

from autoif_dagster.sources import (
    InputError,
    continues_a_conversation,
    iter_json_array,
    load_queries,
    load_seed_rows,
    load_seeds,
)


def test_packaged_seeds_are_unique_format_constraints():
    seeds = load_seeds()
    assert len(seeds) >= 30
    assert len({s.casefold() for s in seeds}) == len(seeds)


def test_packaged_references_name_checkers_that_take_their_arguments():
    """Each seed a benchmark checker checks exactly carries it, and the checker accepts its
    arguments (a misfit would only be named by the audit check, every round)."""
    from autoif_dagster.evaluation import reference_verdict

    rows = load_seed_rows()
    references = {r["instruction"]: json.loads(r["reference"]) for r in rows if r["reference"]}
    assert len(references) == 14
    assert references["Do not use any commas in your answer"]["checker"] == "punctuation:no_comma"
    for instruction, reference in references.items():
        assert isinstance(reference_verdict(reference, "A plain answer."), bool), instruction


def test_seed_references_from_a_table_and_bad_ones_named(tmp_path):
    path = tmp_path / "s.jsonl"
    reference = {"benchmark": "ifeval", "checker": "punctuation:no_comma"}
    path.write_text(json.dumps({"instruction": "Use no commas", "reference": reference}) + "\n"
                    + json.dumps({"instruction": "Be brief"}) + "\n")
    assert [(r["instruction"], r["reference"] and json.loads(r["reference"])) for r in load_seed_rows(str(path))] == [
        ("Use no commas", {**reference, "kwargs": {}}), ("Be brief", None)]
    path.write_text(json.dumps({"instruction": "Use no commas", "reference": {"checker": "punctuation:no_comma"}}))
    with pytest.raises(InputError, match=r"s.jsonl: reference .* is not \{\"benchmark\""):
        load_seed_rows(str(path))


def test_seed_txt_jsonl_and_parquet(tmp_path):
    (tmp_path / "s.txt").write_text("Use no commas\n\n  Answer   in capitals \n")
    assert load_seeds(str(tmp_path / "s.txt")) == ["Use no commas", "Answer in capitals"]
    (tmp_path / "s.jsonl").write_text(json.dumps({"instruction": "Use no commas"}) + "\n")
    assert load_seeds(str(tmp_path / "s.jsonl")) == ["Use no commas"]
    pl.DataFrame({"instruction": ["End with a question"]}).write_parquet(tmp_path / "s.parquet")
    assert load_seeds(str(tmp_path / "s.parquet")) == ["End with a question"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "not found"),
        ("empty.txt", b"\n \n", "holds no instructions"),
        ("latin1.txt", "Écris en minuscules\n".encode("latin-1"), "not UTF-8"),
        ("dupes.txt", b"Use no commas\nuse no commas\n", "duplicate instructions"),
        ("cols.jsonl", b'{"text": "Use no commas"}\n', "no column 'instruction'"),
        ("broken.jsonl", b'{"instruction": "Use no commas"\n', "not valid JSON"),
        ("blank.jsonl", b'{"instruction": ""}\n', "no text in 'instruction'"),
    ],
)
def test_bad_seed_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as exc:
        load_seeds(str(path))
    assert name in str(exc.value) or "holds no" in str(exc.value)


def test_user_queries_with_and_without_ids(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"id": "a", "query": "How do plants grow?"}, {"id": "b", "query": "Explain DNS."}]))
    assert load_queries(str(path)) == [("a", "How do plants grow?"), ("b", "Explain DNS.")]
    path.write_text(json.dumps({"query": "Explain DNS."}))
    assert load_queries(str(path)) == [("q.jsonl:1", "Explain DNS.")]


def test_bad_query_files(tmp_path):
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "query": "x y z"}\n{"id": "a", "query": "p q r"}\n')
    with pytest.raises(InputError, match="duplicate ids"):
        load_queries(str(dup))
    wrong = tmp_path / "wrong.parquet"
    pl.DataFrame({"prompt": ["hi there"]}).write_parquet(wrong)
    with pytest.raises(InputError, match="no column 'query'"):
        load_queries(str(wrong))
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a readable Parquet"):
        load_queries(str(corrupt))


def test_truncated_json_array_yields_complete_records():
    text = '[{"id": 1}, {"id": 2},\n {"id": 3, "conversations": [{"from": "hum'
    assert [r["id"] for r in iter_json_array(text)] == [1, 2]
    assert [r["id"] for r in iter_json_array('[{"id": 1}]')] == [1]


def test_sharegpt_queries_are_first_user_turns():
    queries = load_queries()
    assert len(queries) > 10_000
    source, text = queries[0]
    assert source.startswith("sharegpt:") and text.strip()


def test_a_sharegpt_segment_after_the_first_continues_a_conversation():
    assert not continues_a_conversation("sharegpt:QWJhYvA_0")
    assert continues_a_conversation("sharegpt:hRPPgZT_11")
    # a user file's ids are its own: an underscore means nothing there
    assert not continues_a_conversation("mine_3") and not continues_a_conversation("queries.jsonl:2")
