"""The ledger: on its own (SQLite file) and, for verdicts, behind SandboxResource.judge() (its
completions behind LLMResource.chat() are in test_llm_ledger.py). No mocks: verifiers run in
the real local supervisor."""

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from autoif_dagster.resources.ledger import KEY_BYTES, SCHEMA_VERSION, BatchWriter, Ledger, LedgerError, verdict_keys
from autoif_dagster.resources.sandbox import SandboxResource, VerifierJob
from autoif_dagster.resources.supervisors import sandbox_code_hash
from autoif_dagster.sandbox.protocol import CRASH, EXCEPTION, FAIL, MEMORY, PASS, TIMEOUT, Verdict

NO_LETTER_E = "def evaluate(response):\n    return 'e' not in response.lower()\n"


def kinds(verdicts: list[Verdict]) -> list[str]:
    return [v.kind for v in verdicts]


def reads(path: Path) -> str:
    """A verifier whose verdict is whatever `path` holds when it runs: re-running it after the
    file changed would change the verdict (the local backend can read host files)."""
    return f"def evaluate(response):\n    return open({str(path)!r}).read() == 'yes'\n"


@pytest.fixture
def cached(tmp_path) -> SandboxResource:
    return SandboxResource(backend="local", timeout_s=1.0, workers=2, ledger_path=str(tmp_path / "ledger.sqlite"))


# ---------------------------------------------------------------- through judge()


def test_a_second_judge_executes_nothing_and_returns_the_same(cached, tmp_path):
    switch = tmp_path / "switch"
    switch.write_text("yes")
    jobs = [VerifierJob(reads(switch), ["a", "b"]), VerifierJob(NO_LETTER_E, ["abc", "eee", "xyz"]),
            VerifierJob(NO_LETTER_E, [])]
    first, stats = cached.judge_with_stats(jobs)
    assert [kinds(v) for v in first] == [[PASS, PASS], [PASS, FAIL, PASS], []]
    assert stats == {"verdicts": 5, "cache_hits": 0, "executed": 5, "duplicates": 0, "stored": 5}

    switch.write_text("no")  # run again, the first verifier would now fail
    again, stats = cached.judge_with_stats(jobs)
    assert again == first
    assert stats == {"verdicts": 5, "cache_hits": 5, "executed": 0, "duplicates": 0, "stored": 0}
    # Without the cache it does run, and fails: the cache really answered above.
    plain = SandboxResource(backend="local", timeout_s=1.0, workers=2).judge(jobs[:1])
    assert kinds(plain[0]) == [FAIL, FAIL]


def test_only_missing_pairs_run_and_results_match_an_uncached_run(cached):
    exploding = "def evaluate(response):\n    if response == 'boom':\n        raise ValueError('boom')\n" \
                "    return len(response) > 2\n"
    cached.judge([VerifierJob(NO_LETTER_E, ["abc", "eee"])])
    jobs = [VerifierJob(NO_LETTER_E, ["eee", "new", "abc", "more"]), VerifierJob(exploding, ["boom", "ab", "abcd"])]
    verdicts, stats = cached.judge_with_stats(jobs)
    assert verdicts == SandboxResource(backend="local", timeout_s=1.0).judge(jobs)
    assert stats["cache_hits"] == 2 and stats["executed"] == 5
    result, stats = cached.judge_with_stats(jobs)
    assert result[1][0] == Verdict(EXCEPTION, "ValueError: boom")  # details come back from the cache too
    assert stats["executed"] == 0


def test_repeated_pairs_within_a_call_run_once(cached):
    jobs = [VerifierJob(NO_LETTER_E, ["abc", "eee", "abc"]), VerifierJob(NO_LETTER_E, ["eee", "xyz"])]
    verdicts, stats = cached.judge_with_stats(jobs)
    assert [kinds(v) for v in verdicts] == [[PASS, FAIL, PASS], [FAIL, PASS]]
    assert stats == {"verdicts": 5, "cache_hits": 0, "executed": 3, "duplicates": 2, "stored": 3}


def test_timeouts_and_crashes_are_not_cached(cached):
    source = (
        "import os\n"
        "def evaluate(response):\n"
        "    if response == 'hang':\n        while True:\n            pass\n"
        "    if response == 'die':\n        os._exit(3)\n"
        "    return True\n"
    )
    jobs = [VerifierJob(source, ["ok", "hang", "die", "fine"])]
    cached_sandbox = cached.model_copy(update={"timeout_s": 0.3})
    verdicts, stats = cached_sandbox.judge_with_stats(jobs)
    assert kinds(verdicts[0]) == [PASS, TIMEOUT, CRASH, PASS] and stats["stored"] == 2
    verdicts, stats = cached_sandbox.judge_with_stats(jobs)
    assert kinds(verdicts[0]) == [PASS, TIMEOUT, CRASH, PASS]
    assert stats["cache_hits"] == 2 and stats["executed"] == 2


def test_memory_verdicts_are_not_cached_but_the_others_of_the_call_are(cached, tmp_path):
    """Where the memory limit bites depends on what the supervisor had mapped when it forked,
    so a memory verdict is judged again each time. The verifier reads `mood`: while it is
    'bomb', the input 'bomb' exhausts its memory; after the switch every verdict it gives is
    the opposite, so a verdict that did not change came from the ledger."""
    mood = tmp_path / "mood"
    mood.write_text("bomb")
    source = (
        "def evaluate(response):\n"
        f"    mood = open({str(mood)!r}).read()\n"
        "    if mood == 'bomb' and response == 'bomb':\n"
        "        return len('x' * 10**10) > 0\n"
        "    return ('e' not in response) == (mood == 'bomb')\n"
    )
    sandbox = cached.model_copy(update={"memory_mb": 128})
    jobs = [VerifierJob(source, ["abc", "bomb", "eee"])]
    assert sandbox.judge(jobs)[0] == [Verdict(PASS), Verdict(MEMORY, "MemoryError"), Verdict(FAIL)]
    with Ledger(sandbox.ledger_path) as ledger:
        assert ledger.count("verdicts") == 2
    mood.write_text("calm")
    verdicts, stats = sandbox.judge_with_stats(jobs)
    assert kinds(verdicts[0]) == [PASS, FAIL, FAIL]  # 'bomb' ran again; the others are the stored ones
    assert stats["cache_hits"] == 2 and stats["executed"] == 1


def test_the_cache_is_keyed_by_sandbox_version(cached, tmp_path):
    switch = tmp_path / "switch"
    switch.write_text("yes")
    job = VerifierJob(reads(switch), ["a"])
    assert kinds(cached.judge([job])[0]) == [PASS]
    switch.write_text("no")
    # Another memory limit can change what a verifier does (MemoryError): another version.
    other = cached.model_copy(update={"memory_mb": 256})
    assert other.sandbox_version() != cached.sandbox_version()
    verdicts, stats = other.judge_with_stats([job])
    assert kinds(verdicts[0]) == [FAIL] and stats["executed"] == 1
    assert kinds(cached.judge([job])[0]) == [PASS]  # the first version's verdict is still there


def test_sandbox_version_names_backend_and_code():
    local = SandboxResource(backend="local").sandbox_version()
    assert local.startswith("local:") and "mem512" in local
    host = SandboxResource(backend="host").sandbox_version()
    assert host.startswith("host:") and host != local
    assert sandbox_code_hash() in host and sandbox_code_hash() in local  # the same supervisor code


def test_describe_and_stats_without_a_cache():
    sandbox = SandboxResource(backend="local", timeout_s=1.0)
    assert sandbox.describe()["verdict_ledger"] == "off"
    _, stats = sandbox.judge_with_stats([VerifierJob(NO_LETTER_E, ["a", "e"])])
    assert stats == {"verdicts": 2, "cache_hits": 0, "executed": 2, "duplicates": 0, "stored": 0}


def test_describe_names_the_cache(cached):
    facts = cached.describe()
    assert cached.ledger_path in facts["verdict_ledger"] and "not stored" in facts["verdict_ledger"]


def test_a_fully_cached_call_starts_no_supervisor(cached, monkeypatch):
    from autoif_dagster.resources import supervisors as supervisors

    jobs = [VerifierJob(NO_LETTER_E, ["abc", "eee"])]
    cached.judge(jobs)
    supervisors.shutdown_supervisors()

    def refuse(self):
        raise AssertionError("a supervisor was started")

    monkeypatch.setattr(supervisors.Supervisor, "_start", refuse)
    assert kinds(cached.judge(jobs)[0]) == [PASS, FAIL]


# ---------------------------------------------------------------- the file


def test_keys_depend_on_every_part():
    (a,), = verdict_keys("v1", [("src", ["x"])])
    assert verdict_keys("v1", [("src", ["x"])]) == [[a]]
    assert len({a, verdict_keys("v2", [("src", ["x"])])[0][0], verdict_keys("v1", [("src2", ["x"])])[0][0],
                verdict_keys("v1", [("src", ["y"])])[0][0], verdict_keys("v1", [("sr", ["cx"])])[0][0]}) == 5
    assert len(verdict_keys("v1", [("s", ["\ud800 lone surrogate"])])[0][0]) == 16


def test_put_and_get(tmp_path):
    path = tmp_path / "sub" / "ledger.sqlite"  # parent directories are made
    with Ledger(path, batch_size=3) as ledger:
        rows = [(bytes([i]) * 16, PASS if i % 2 else EXCEPTION, f"detail {i}") for i in range(10)]
        assert ledger.put_many("verdicts", rows) == 10
        assert ledger.count("verdicts") == 10 and ledger.count("completions") == 0
        assert ledger.get_many("verdicts", [r[0] for r in rows] + [b"z" * 16]) == {r[0]: r[1:] for r in rows}
    with Ledger(path) as ledger:  # reopened
        assert ledger.get_many("verdicts", [rows[3][0]]) == {rows[3][0]: rows[3][1:]}
        ledger.put_many("verdicts", [(rows[3][0], FAIL, "")])  # present: the first row stays
        assert ledger.get_many("verdicts", [rows[3][0]])[rows[3][0]] == rows[3][1:]
        assert ledger.get_many("completions", [rows[3][0]]) == {}  # tables do not mix
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_full_disk_is_named_and_keeps_every_batch_committed_before_it(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path, batch_size=50) as ledger:
        pages = ledger._db.execute("PRAGMA page_count").fetchone()[0]
        ledger._db.execute(f"PRAGMA max_page_count = {pages + 8}")  # the disk fills after a few pages
        rows = [(i.to_bytes(16, "big"), PASS, "x" * 200) for i in range(2000)]
        with pytest.raises(LedgerError, match=f"{path} cannot be written: .*full"):
            ledger.put_many("verdicts", rows)
        kept = ledger.count("verdicts")
        assert 0 < kept < len(rows) and kept % 50 == 0  # whole batches, none half-written
        assert set(ledger.get_many("verdicts", [r[0] for r in rows])) == {r[0] for r in rows[:kept]}
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_timeouts_and_crashes_are_never_stored(cached):
    jobs = [VerifierJob("import time\ndef evaluate(response):\n    time.sleep(5)\n    return True\n", ["a"]),
            VerifierJob("import os\ndef evaluate(response):\n    os._exit(3)\n", ["b"])]
    assert {v[0].kind for v in cached.judge(jobs)} <= {TIMEOUT, CRASH}
    with Ledger(cached.ledger_path) as ledger:
        assert ledger.count("verdicts") == 0


def _old_ledger(path, version: str, *statements: tuple) -> None:
    """A file as an earlier schema wrote it: its meta, its verdicts table, then `statements`."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema', ?)", (version,))
    db.execute("CREATE TABLE verdicts (key BLOB PRIMARY KEY, kind TEXT NOT NULL, detail TEXT NOT NULL) WITHOUT ROWID")
    for statement in statements:
        db.execute(*statement)
    db.commit()
    db.close()


def test_a_verdict_cache_of_schema_1_is_upgraded_in_place(tmp_path):
    path = tmp_path / "verdicts.sqlite"
    _old_ledger(path, "1", ("INSERT INTO verdicts VALUES (?, 'pass', '')", (b"k" * 16,)))
    with Ledger(path) as ledger:
        assert ledger.get_many("verdicts", [b"k" * 16]) == {b"k" * 16: (PASS, "")}
        assert ledger.count("completions") == 0
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0] == SCHEMA_VERSION


def test_a_ledger_of_schema_2_gains_logprobs_and_keeps_its_completions(tmp_path):
    path = tmp_path / "ledger.sqlite"
    _old_ledger(path, "2",
                ("CREATE TABLE completions (key BLOB PRIMARY KEY, text TEXT NOT NULL, finish_reason TEXT NOT NULL, "
                 "n_tokens INTEGER NOT NULL, model TEXT NOT NULL, request TEXT NOT NULL, run_id TEXT NOT NULL, "
                 "created_at REAL NOT NULL) WITHOUT ROWID",),
                ("INSERT INTO completions VALUES (?, 'hi', 'stop', 1, 'm', '{}', 'run-1', 0.0)", (b"c" * 16,)))
    with Ledger(path) as ledger:
        assert ledger.get_many("completions", [b"c" * 16]) == {b"c" * 16: ("hi", "stop", 1, "m", "{}", "run-1", 0.0, None)}
        ledger.put_many("completions", [(b"d" * 16, "7", "stop", 1, "m", "{}", "run-2", 1.0, '[{"7": -0.1}]')])
        assert ledger.get_many("completions", [b"d" * 16])[b"d" * 16][-1] == '[{"7": -0.1}]'
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0] == SCHEMA_VERSION


def test_a_ledger_of_another_schema_version_names_it(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99'")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match=f"{path}.*schema '99', expected '{SCHEMA_VERSION}'"):
        Ledger(path)


def _writer(path: str, worker: int, rounds: int) -> None:
    with Ledger(path, busy_timeout_s=60, batch_size=50) as ledger:
        for r in range(rounds):
            # Overlapping keys: both processes write some of the same ones.
            rows = [(f"{(r * 100 + i) % 500}".encode().ljust(16, b"."), FAIL, str((r * 100 + i) % 500))
                    for i in range(worker * 50, worker * 50 + 150)]
            ledger.put_many("verdicts", rows)
            ledger.get_many("verdicts", (row[0] for row in rows))


def test_concurrent_writers_in_two_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    Ledger(path).close()
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_writer, args=(path, worker, 40)) for worker in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Ledger(path) as ledger:
        keys = [f"{n}".encode().ljust(16, b".") for n in range(500)]
        found = ledger.get_many("verdicts", keys)
        assert len(found) == 500 and all(found[k][1] == k.rstrip(b".").decode() for k in keys)


def test_a_corrupt_file_names_itself(tmp_path):
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match=f"{path}.*not a usable ledger"):
        Ledger(path)
    with pytest.raises(LedgerError, match=str(path)):  # through judge() too
        SandboxResource(backend="local", ledger_path=str(path)).judge([VerifierJob(NO_LETTER_E, ["a"])])


def test_a_damaged_database_names_itself(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.put_many("verdicts", [(bytes([i % 256, i // 256]) * 8, FAIL, "x" * 100) for i in range(3000)])
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    data = bytearray(path.read_bytes())
    data[4096 * 3:4096 * 6] = b"\xff" * (4096 * 3)  # scribble over B-tree pages
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerError, match=str(path)):
        with Ledger(path) as ledger:
            ledger.get_many("verdicts", (bytes([i % 256, i // 256]) * 8 for i in range(3000)))


def test_an_unopenable_path_and_a_foreign_database_name_themselves(tmp_path):
    directory = tmp_path / "a_directory"
    directory.mkdir()
    with pytest.raises(LedgerError, match=f"{directory}.*cannot be opened|{directory}.*not a usable"):
        Ledger(directory)
    foreign = tmp_path / "other.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(LedgerError, match=f"{foreign}.*other tables \\(people\\)"):
        Ledger(foreign)


def test_a_batch_writer_stores_every_n_rows_and_keeps_what_finished_before_an_error(tmp_path):
    path = tmp_path / "ledger.sqlite"
    rows = [(bytes([i]) * KEY_BYTES, "pass", "") for i in range(5)]
    with Ledger(path) as ledger:
        with BatchWriter(ledger, "verdicts", every=2) as writer:
            assert [writer.add(row) for row in rows[:3]] == [False, True, False]
            assert ledger.count("verdicts") == 2  # a batch is stored as soon as it is full
        assert ledger.count("verdicts") == 3 and writer.stored == 3  # the rest on the way out
        with pytest.raises(KeyboardInterrupt):
            with BatchWriter(ledger, "verdicts", every=10) as writer:
                writer.add(rows[3])
                raise KeyboardInterrupt  # the caller's own error is the one raised
        assert ledger.count("verdicts") == 4  # what finished before it is kept
    assert BatchWriter(None, "verdicts", every=1).add(rows[4]) is False  # no ledger: nothing kept
