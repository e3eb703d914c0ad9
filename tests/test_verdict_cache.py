"""The verdict cache: on its own (SQLite file) and behind SandboxResource.judge(). No mocks:
verifiers run in the real local supervisor."""

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from autoif_dagster.resources.sandbox import SandboxResource, VerifierJob
from autoif_dagster.resources.verdict_cache import VerdictCache, VerdictCacheError, verdict_keys
from autoif_dagster.sandbox.protocol import CRASH, EXCEPTION, FAIL, PASS, TIMEOUT, Verdict

NO_LETTER_E = "def evaluate(response):\n    return 'e' not in response.lower()\n"


def kinds(verdicts: list[Verdict]) -> list[str]:
    return [v.kind for v in verdicts]


def reads(path: Path) -> str:
    """A verifier whose verdict is whatever `path` holds when it runs: re-running it after the
    file changed would change the verdict (the local backend can read host files)."""
    return f"def evaluate(response):\n    return open({str(path)!r}).read() == 'yes'\n"


@pytest.fixture
def cached(tmp_path) -> SandboxResource:
    return SandboxResource(timeout_s=1.0, workers=2, cache_path=str(tmp_path / "verdicts.sqlite"))


# ---------------------------------------------------------------- through judge()


def test_a_second_judge_executes_nothing_and_returns_the_same(cached, tmp_path):
    switch = tmp_path / "switch"
    switch.write_text("yes")
    jobs = [VerifierJob(reads(switch), ["a", "b"]), VerifierJob(NO_LETTER_E, ["abc", "eee", "xyz"]),
            VerifierJob(NO_LETTER_E, [])]
    first = cached.judge(jobs)
    assert [kinds(v) for v in first] == [[PASS, PASS], [PASS, FAIL, PASS], []]
    assert cached.last_stats == {"verdicts": 5, "cache_hits": 0, "executed": 5, "duplicates": 0, "stored": 5}

    switch.write_text("no")  # run again, the first verifier would now fail
    again = cached.judge(jobs)
    assert again == first
    assert cached.last_stats == {"verdicts": 5, "cache_hits": 5, "executed": 0, "duplicates": 0, "stored": 0}
    # Without the cache it does run, and fails: the cache really answered above.
    plain = SandboxResource(timeout_s=1.0, workers=2).judge(jobs[:1])
    assert kinds(plain[0]) == [FAIL, FAIL]


def test_only_missing_pairs_run_and_results_match_an_uncached_run(cached):
    exploding = "def evaluate(response):\n    if response == 'boom':\n        raise ValueError('boom')\n" \
                "    return len(response) > 2\n"
    cached.judge([VerifierJob(NO_LETTER_E, ["abc", "eee"])])
    jobs = [VerifierJob(NO_LETTER_E, ["eee", "new", "abc", "more"]), VerifierJob(exploding, ["boom", "ab", "abcd"])]
    assert cached.judge(jobs) == SandboxResource(timeout_s=1.0).judge(jobs)
    assert cached.last_stats["cache_hits"] == 2 and cached.last_stats["executed"] == 5
    result = cached.judge(jobs)
    assert result[1][0] == Verdict(EXCEPTION, "ValueError: boom")  # details come back from the cache too
    assert cached.last_stats["executed"] == 0


def test_repeated_pairs_within_a_call_run_once(cached):
    jobs = [VerifierJob(NO_LETTER_E, ["abc", "eee", "abc"]), VerifierJob(NO_LETTER_E, ["eee", "xyz"])]
    assert [kinds(v) for v in cached.judge(jobs)] == [[PASS, FAIL, PASS], [FAIL, PASS]]
    assert cached.last_stats == {"verdicts": 5, "cache_hits": 0, "executed": 3, "duplicates": 2, "stored": 3}


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
    assert kinds(cached_sandbox.judge(jobs)[0]) == [PASS, TIMEOUT, CRASH, PASS]
    assert cached_sandbox.last_stats["stored"] == 2
    assert kinds(cached_sandbox.judge(jobs)[0]) == [PASS, TIMEOUT, CRASH, PASS]
    assert cached_sandbox.last_stats["cache_hits"] == 2 and cached_sandbox.last_stats["executed"] == 2


def test_the_cache_is_keyed_by_sandbox_version(cached, tmp_path):
    switch = tmp_path / "switch"
    switch.write_text("yes")
    job = VerifierJob(reads(switch), ["a"])
    assert kinds(cached.judge([job])[0]) == [PASS]
    switch.write_text("no")
    # Another memory limit can change what a verifier does (MemoryError): another version.
    other = cached.model_copy(update={"memory_mb": 256})
    assert other.sandbox_version() != cached.sandbox_version()
    assert kinds(other.judge([job])[0]) == [FAIL]
    assert other.last_stats["executed"] == 1
    assert kinds(cached.judge([job])[0]) == [PASS]  # the first version's verdict is still there


def test_sandbox_version_names_backend_and_code():
    local = SandboxResource().sandbox_version()
    assert local.startswith("local:") and "mem512" in local
    assert SandboxResource(backend="host").sandbox_version().startswith("host:")
    assert SandboxResource(backend="host").sandbox_version().split(":")[1] == local.split(":")[1]  # same code


def test_describe_and_stats_without_a_cache():
    sandbox = SandboxResource(timeout_s=1.0)
    assert sandbox.describe()["verdict_cache"] == "off"
    sandbox.judge([VerifierJob(NO_LETTER_E, ["a", "e"])])
    assert sandbox.last_stats == {"verdicts": 2, "cache_hits": 0, "executed": 2, "duplicates": 0, "stored": 0}


def test_describe_names_the_cache(cached):
    facts = cached.describe()
    assert cached.cache_path in facts["verdict_cache"] and "not cached" in facts["verdict_cache"]


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
    path = tmp_path / "sub" / "cache.sqlite"  # parent directories are made
    with VerdictCache(path, batch_size=3) as cache:
        items = [(bytes([i]) * 32, Verdict(PASS if i % 2 else EXCEPTION, f"detail {i}")) for i in range(10)]
        assert cache.put_many(items + [(b"t" * 32, Verdict(TIMEOUT, "x")), (b"c" * 32, Verdict(CRASH))]) == 10
        assert len(cache) == 10
        assert cache.get_many([k for k, _ in items] + [b"t" * 32, b"z" * 32]) == dict(items)
    with VerdictCache(path) as cache:  # reopened
        assert cache.get_many([items[3][0]]) == {items[3][0]: items[3][1]}
        assert cache.put_many([(items[3][0], Verdict(FAIL))]) == 1  # present: the first verdict stays
        assert cache.get_many([items[3][0]])[items[3][0]] == items[3][1]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(path: str, worker: int, rounds: int) -> None:
    with VerdictCache(path, busy_timeout_s=60, batch_size=50) as cache:
        for r in range(rounds):
            # Overlapping keys: both processes write some of the same ones.
            items = [(f"{(r * 100 + i) % 500}".encode().ljust(32, b"."), Verdict(FAIL, str((r * 100 + i) % 500)))
                     for i in range(worker * 50, worker * 50 + 150)]
            cache.put_many(items)
            cache.get_many(key for key, _ in items)


def test_concurrent_writers_in_two_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    VerdictCache(path).close()
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_writer, args=(path, worker, 40)) for worker in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with VerdictCache(path) as cache:
        keys = [f"{n}".encode().ljust(32, b".") for n in range(500)]
        found = cache.get_many(keys)
        assert len(found) == 500 and all(found[k].detail == k.rstrip(b".").decode() for k in keys)


def test_a_corrupt_file_names_itself(tmp_path):
    path = tmp_path / "verdicts.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(VerdictCacheError, match=f"{path}.*not a usable verdict cache"):
        VerdictCache(path)
    with pytest.raises(VerdictCacheError, match=str(path)):  # through judge() too
        SandboxResource(cache_path=str(path)).judge([VerifierJob(NO_LETTER_E, ["a"])])


def test_a_damaged_database_names_itself(tmp_path):
    path = tmp_path / "verdicts.sqlite"
    with VerdictCache(path) as cache:
        cache.put_many([(bytes([i % 256, i // 256]) * 16, Verdict(FAIL, "x" * 100)) for i in range(3000)])
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    data = bytearray(path.read_bytes())
    data[4096 * 3:4096 * 6] = b"\xff" * (4096 * 3)  # scribble over B-tree pages
    path.write_bytes(bytes(data))
    with pytest.raises(VerdictCacheError, match=str(path)):
        with VerdictCache(path) as cache:
            cache.get_many(bytes([i % 256, i // 256]) * 16 for i in range(3000))


def test_an_unopenable_path_and_a_foreign_database_name_themselves(tmp_path):
    directory = tmp_path / "a_directory"
    directory.mkdir()
    with pytest.raises(VerdictCacheError, match=f"{directory}.*cannot be opened|{directory}.*not a usable"):
        VerdictCache(directory)
    foreign = tmp_path / "other.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(VerdictCacheError, match=f"{foreign}.*other tables \\(people\\)"):
        VerdictCache(foreign)
