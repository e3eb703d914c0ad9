"""`autoif run` on bad input: a clear error naming the problem, a non-zero exit, and no
artifact downstream of the failure written."""

from autoif_dagster import cli


def test_bad_seed_file_fails_the_run_with_its_reason(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    seeds = tmp_path / "seeds.txt"
    seeds.write_bytes("Écris en minuscules\n".encode("latin-1"))
    code = cli.main(["run", "--home", str(tmp_path / "home"), "--seeds", str(seeds)])
    err = capsys.readouterr().err
    assert code == 1
    assert "step seed_instructions failed" in err and "is not UTF-8" in err and str(seeds) in err
    written = {p.stem for p in (tmp_path / "home" / "assets").glob("*.parquet")}
    assert written <= {"queries"}  # the independent branch may finish; nothing after the seeds
    assert not list((tmp_path / "home" / "assets").glob(".*.tmp"))


def test_funnel_printout(capsys):
    rows = [{"asset": "verifiers", "in": 41, "out": 12, "dropped": {"compile_error": 15, "below_accuracy": 4}}]
    cli.print_funnel(rows)
    out = capsys.readouterr().out
    assert "verifiers" in out and "compile_error: 15, below_accuracy: 4" in out
