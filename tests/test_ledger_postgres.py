"""The ledger on a real PostgreSQL server: the same tables and behaviour as the SQLite file,
shared by writers in several processes at once with every record stored once."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoif_dagster.resources.ledger import Ledger, LedgerError, PostgresLedger, canonical_json, completion_key, memoize
from autoif_dagster.resources.sandbox import SandboxResource, VerifierJob
from autoif_dagster.sandbox.protocol import FAIL, PASS

ROOT = Path(__file__).resolve().parents[1]
NO_LETTER_E = "def evaluate(response):\n    return 'e' not in response\n"


def test_a_database_url_opens_the_tables_on_the_server(postgres_database):
    with Ledger(postgres_database) as ledger:
        assert isinstance(ledger, PostgresLedger)
        assert ledger.put_many("verdicts", [(b"k1", PASS, ""), (b"k2", FAIL, "no")]) == 2
        ledger.put_many("verdicts", [(b"k1", FAIL, "a later writer")])  # a stored key keeps its row
        assert ledger.get_many("verdicts", [b"k1", b"k2", b"k3"]) == {b"k1": (PASS, ""), b"k2": (FAIL, "no")}
        assert ledger.count("verdicts") == 2
    with Ledger(postgres_database) as again:  # opening an existing ledger keeps what it holds
        assert again.count("verdicts") == 2


def test_completions_export_from_sqlite_and_import_into_postgres_unchanged(postgres_database, tmp_path):
    request = {"model": "m", "messages": [{"role": "user", "content": "Name a fruit."}], "seed": 1}
    row = (completion_key(request), "an apple", "stop", 3, "m", canonical_json(request), "run-1", 1.5,
           json.dumps([{"an": -0.1, "a": -2.5}]))
    with Ledger(tmp_path / "ledger.sqlite") as local:
        local.put_many("completions", [row])
        local.export_completions(tmp_path / "run.jsonl.gz")
    with Ledger(postgres_database) as shared:
        assert shared.import_completions(tmp_path / "run.jsonl.gz") == 1
        shared.export_completions(tmp_path / "back.jsonl.gz")
    with Ledger(tmp_path / "ledger.sqlite") as local:
        local.export_completions(tmp_path / "again.jsonl.gz")
    assert gzip.open(tmp_path / "back.jsonl.gz").read() == gzip.open(tmp_path / "again.jsonl.gz").read()


# A writer process: memoizes 0..N-1 (its own range) into the shared ledger, slowly enough that
# the two processes interleave, and prints what it computed.
WRITER = """
import json, sys, time
from autoif_dagster.resources.ledger import Ledger, memoize
url, first, last, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
keys = [i.to_bytes(16, "big") for i in range(first, last)]
def compute(positions, done):
    for p in positions:
        time.sleep(0.002)
        done(p, name)
with Ledger(url) as ledger:
    memo = memoize(ledger, "verdicts", keys, lambda row: row[1], compute,
                   lambda key, value: (key, "pass", value), every=7)
print(json.dumps({"computed": memo.computed, "hits": memo.hits}))
"""


def test_two_writers_at_once_store_every_record_once(postgres_database):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, postgres_database, first, last, name],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for first, last, name in (("0", "300", "a"), ("200", "500", "b"))]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    with Ledger(postgres_database) as ledger:
        assert ledger.count("verdicts") == 500  # the 100 keys both wrote are there once
        stored = ledger.get_many("verdicts", [i.to_bytes(16, "big") for i in range(500)])
    assert {stored[i.to_bytes(16, "big")][1] for i in range(200)} == {"a"}
    assert {stored[i.to_bytes(16, "big")][1] for i in range(300, 500)} == {"b"}
    assert {stored[i.to_bytes(16, "big")][1] for i in range(200, 300)} <= {"a", "b"}
    assert sum(o["computed"] + o["hits"] for o in outs) == 600


def test_a_failed_compute_keeps_what_finished_in_postgres(postgres_database):
    keys = [i.to_bytes(16, "big") for i in range(10)]

    def compute(positions, done):
        for p in positions[:4]:
            done(p, "kept")
        raise KeyboardInterrupt

    with Ledger(postgres_database) as ledger, pytest.raises(KeyboardInterrupt):
        memoize(ledger, "verdicts", keys, lambda row: row[1], compute, lambda k, v: (k, "pass", v), every=100)
    with Ledger(postgres_database) as ledger:
        assert ledger.count("verdicts") == 4


def test_the_sandbox_keeps_its_verdicts_on_the_server(postgres_database):
    sandbox = SandboxResource(backend="local", timeout_s=2.0, ledger_path=postgres_database)
    jobs = [VerifierJob(NO_LETTER_E, ["abc", "eee", "abc"])]
    first = sandbox.judge_with_stats(jobs)
    assert [[v.kind for v in row] for row in first.verdicts] == [[PASS, FAIL, PASS]]
    assert (first.stats["executed"], first.stats["duplicates"], first.stats["stored"]) == (2, 1, 2)
    second = sandbox.judge_with_stats(jobs)
    assert second.verdicts == first.verdicts and second.stats["cache_hits"] == 3 and second.stats["executed"] == 0


def test_an_unreachable_server_is_a_clear_error_without_the_password():
    url = "postgresql://someone:secret@127.0.0.1:1/nowhere"
    with pytest.raises(LedgerError, match=r"ledger postgresql://someone:\*\*\*@127.0.0.1:1/nowhere cannot be reached") as err:
        PostgresLedger(url, connect_timeout_s=1)
    assert "secret" not in str(err.value)


def test_a_database_holding_another_schema_version_is_refused(postgres_database, postgres_server):
    with Ledger(postgres_database):
        pass
    import psycopg2
    with psycopg2.connect(postgres_database) as db, db.cursor() as cur:
        cur.execute("UPDATE meta SET value='99' WHERE name='schema'")
    with pytest.raises(LedgerError, match="schema '99'"):
        Ledger(postgres_database)


# A run's LLM calls: the real engine, its completions kept in the shared ledger.
RUN = """
import json, sys
from autoif_dagster.resources.llm import ChatRequest, LLMResource
from autoif_dagster.resources.models import SMOKE_MODEL
llm = LLMResource(model=SMOKE_MODEL, ledger_path=sys.argv[1], ledger_chunk=2)
requests = [ChatRequest([{"role": "user", "content": f"Name a colour ({i})."}], max_tokens=8, seed=i) for i in range(6)]
result = llm.chat(requests)
print(json.dumps({"misses": result.stats.ledger_misses, "hits": result.stats.ledger_hits}))
"""


@pytest.mark.engine
def test_two_runs_at_once_share_one_ledger_and_store_each_completion_once(postgres_database):
    procs = [subprocess.Popen([sys.executable, "-c", RUN, postgres_database], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, cwd=ROOT) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(o["hits"] + o["misses"] == 6 for o in outs)
    with Ledger(postgres_database) as ledger:
        assert ledger.count("completions") == 6
    third = subprocess.run([sys.executable, "-c", RUN, postgres_database], capture_output=True, text=True,
                           cwd=ROOT, timeout=600)
    assert json.loads(third.stdout.strip().splitlines()[-1]) == {"misses": 0, "hits": 6}
