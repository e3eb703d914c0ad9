"""The ledger: what every LLM call returned and what every verifier said, by content address.

One SQLite file, one table per kind of record, each row keyed by a hash of everything that
can change it:
- `verdicts`: (sandbox version, verifier source, input) -> verdict. A verdict is a function
  of the three for a verifier that behaves (no randomness, no clock, no state kept between
  calls). TIMEOUT and CRASH verdicts are never stored: whether a call finishes in time
  depends on the machine's load, and a crash can come from outside the verifier.
- `completions`: (model identity, messages, sampling parameters, output schema) -> the raw
  text, finish reason and token count (and each token's likeliest alternatives, where asked),
  with the request itself and the run that asked, so a parser change re-parses without
  re-asking and `autoif trace` can show the generation.
  Requests that failed (finish reason "error") are not stored: they are asked again.

Readers do not block writers (WAL mode), writers take turns (waiting up to
`busy_timeout_s`), so several runs and processes can share one file. Writes are committed
in batches as results arrive; a crash loses at most the batch being written, and SQLite's
journal keeps the file consistent. A file that is not a ledger, is damaged, or has another
schema version raises LedgerError naming it. A version-1 file (the verdict cache that came
before) and a version-2 one (completions without alternatives) are upgraded in place: what
they hold stays valid.

Many machines share one ledger on PostgreSQL: a postgresql:// URL where a path would go
(AUTOIF_LEDGER_URL for a home) opens the same tables there (PostgresLedger).
"""

import contextlib
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

SCHEMA_VERSION = "3"
_QUERY_CHUNK = 500  # keys per SELECT ... IN (...): under every SQLite's variable limit
# 128 bits: a chance collision stays below 1e-20 for a billion records; shorter keys make
# lookups ~1.5x faster than full 32-byte digests.
KEY_BYTES = 16
# table -> its value columns (every table also has `key BLOB PRIMARY KEY`)
TABLES: dict[str, tuple[str, ...]] = {
    "verdicts": ("kind TEXT NOT NULL", "detail TEXT NOT NULL"),
    "completions": (
        "text TEXT NOT NULL", "finish_reason TEXT NOT NULL", "n_tokens INTEGER NOT NULL",
        "model TEXT NOT NULL", "request TEXT NOT NULL", "run_id TEXT NOT NULL", "created_at REAL NOT NULL",
        "top_logprobs TEXT",  # JSON, per token its alternatives; NULL where none were asked for
    ),
}
_KEY_DOMAINS = {"verdicts": b"autoif-verdict-key-v1\0", "completions": b"autoif-completion-key-v1\0"}


class LedgerError(RuntimeError):
    """The ledger file cannot be used (not a ledger, damaged, unreadable, full)."""


def _digest(text: str) -> bytes:
    # surrogatepass: LLM text may hold lone surrogates, which strict UTF-8 refuses.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def verdict_keys(version: str, jobs: Sequence[tuple[str, Sequence[str]]]) -> list[list[bytes]]:
    """For each (source, inputs) pair, the key of each input: a SHA-256 of the sandbox
    version, the source and the input (each hashed on its own first, so that no choice of
    strings can make two different triples collide by concatenation), cut to KEY_BYTES."""
    scope = hashlib.sha256(_KEY_DOMAINS["verdicts"] + _digest(version)).digest()
    texts: dict[str, bytes] = {}
    keys = []
    for source, inputs in jobs:
        prefix = scope + _digest(source)
        row = []
        for text in inputs:
            digest = texts.get(text)
            if digest is None:
                digest = texts[text] = _digest(text)
            row.append(hashlib.sha256(prefix + digest).digest()[:KEY_BYTES])
        keys.append(row)
    return keys


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, non-ASCII kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def completion_key(request: dict[str, Any]) -> bytes:
    """The key of an LLM request given as the dict of everything that can change its output
    (LLMResource.request_identity): its canonical JSON, hashed."""
    return hashlib.sha256(_KEY_DOMAINS["completions"] + _digest(canonical_json(request))).digest()[:KEY_BYTES]


def _open(path: str | Path, mode: str) -> Any:
    import gzip

    return gzip.open(path, mode, encoding="utf-8") if str(path).endswith(".gz") else open(path, mode, encoding="utf-8")


def is_database_url(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


class Ledger:
    """get_many / put_many per table over one SQLite file; use as a context manager.
    `Ledger(url)` with a postgresql:// URL is a PostgresLedger: the same tables on a server."""

    def __new__(cls, location: str | Path, *args: Any, **kwargs: Any) -> "Ledger":
        if cls is Ledger and is_database_url(location):
            cls = PostgresLedger
        return super().__new__(cls)

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0, batch_size: int = 2000) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._error("cannot be opened", exc) from exc
        try:
            self._set_up()
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error("is not a usable ledger", exc) from exc

    def _set_up(self) -> None:
        db = self._db
        # Reading the header first: a file that is not SQLite fails here, before anything is written.
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise sqlite3.DatabaseError("cannot switch to WAL journal mode")
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: consistent after a crash, fsync per checkpoint
        db.execute("BEGIN IMMEDIATE")  # two processes creating the file take turns
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables:
                if "meta" not in tables or not tables & set(TABLES):
                    raise sqlite3.DatabaseError(f"a SQLite file with other tables ({', '.join(sorted(tables))})")
                row = db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
                version = row[0] if row else None
                if version not in ("1", "2", SCHEMA_VERSION):  # 1: the verdict cache, 2: no logprobs; upgraded below
                    raise sqlite3.DatabaseError(f"schema {version!r}, expected {SCHEMA_VERSION!r}")
                if version == "2":
                    db.execute("ALTER TABLE completions ADD COLUMN top_logprobs TEXT")
            else:
                db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                db.execute("INSERT INTO meta VALUES ('schema', '')")
            for table, columns in TABLES.items():
                if table not in tables:
                    db.execute(f"CREATE TABLE {table} (key BLOB PRIMARY KEY, {', '.join(columns)}) WITHOUT ROWID")
            db.execute("UPDATE meta SET value=? WHERE name='schema'", (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def get_many(self, table: str, keys: Iterable[bytes]) -> dict[bytes, tuple]:
        """The stored rows (value columns, in TABLES order) among `keys`."""
        wanted = sorted(set(keys))  # in key order: fewer B-tree pages visited
        found: dict[bytes, tuple] = {}
        columns = ", ".join(c.split()[0] for c in TABLES[table])
        try:
            for start in range(0, len(wanted), _QUERY_CHUNK):
                chunk = wanted[start:start + _QUERY_CHUNK]
                rows = self._db.execute(
                    f"SELECT key, {columns} FROM {table} WHERE key IN ({','.join('?' * len(chunk))})", chunk
                )
                for key, *values in rows:
                    found[bytes(key)] = tuple(values)
        except sqlite3.Error as exc:
            raise self._error("cannot be read", exc) from exc
        return found

    def put_many(self, table: str, rows: Iterable[tuple]) -> int:
        """Store (key, *values) rows, committing every batch_size; the number given. A key
        already present keeps its row."""
        rows = sorted(rows, key=lambda r: r[0])  # key order: ~2x faster inserts
        marks = ",".join("?" * (1 + len(TABLES[table])))
        try:
            for start in range(0, len(rows), self.batch_size):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})",
                                         rows[start:start + self.batch_size])
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite has already rolled back after some errors (a full disk)
                        self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise self._error("cannot be written", exc) from exc
        return len(rows)

    def export_completions(self, path: str | Path) -> int:
        """Every completion as a JSON line (gzipped for a .gz path): the request, the text and
        where it came from. A recorded run to replay elsewhere (the tests' fixtures)."""
        rows = self._query("SELECT request, text, finish_reason, n_tokens, run_id, created_at, top_logprobs "
                           "FROM completions ORDER BY created_at, key")
        with _open(path, "wt") as out:
            n = 0
            for request, text, finish_reason, n_tokens, run_id, created_at, logprobs in rows:
                out.write(json.dumps({"request": json.loads(request), "text": text, "finish_reason": finish_reason,
                                      "n_tokens": n_tokens, "run_id": run_id, "created_at": created_at,
                                      **({"top_logprobs": json.loads(logprobs)} if logprobs else {})}) + "\n")
                n += 1
        return n

    def import_completions(self, path: str | Path) -> int:
        """Completions exported by export_completions, each stored under the key its request
        hashes to (so an edited request is another request, never a wrong answer)."""
        rows = []
        with _open(path, "rt") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    r = json.loads(line)
                    rows.append((completion_key(r["request"]), r["text"], r["finish_reason"], int(r["n_tokens"]),
                                 r["request"]["model"], canonical_json(r["request"]), r["run_id"], float(r["created_at"]),
                                 json.dumps(r["top_logprobs"]) if r.get("top_logprobs") else None))
                except (ValueError, KeyError, TypeError) as exc:
                    raise LedgerError(f"{path} line {number} is not an exported completion: {exc!r}") from None
        return self.put_many("completions", rows)

    def count(self, table: str) -> int:
        return list(self._query(f"SELECT count(*) FROM {table}"))[0][0]

    def _query(self, sql: str) -> Iterable[tuple]:
        return self._db.execute(sql)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _error(self, what: str, exc: BaseException) -> LedgerError:
        return LedgerError(f"ledger {self.path} {what}: {exc} (delete the file to start afresh)")


class BatchWriter:
    """Rows of one table stored as they arrive, a batch every `every` rows, and what is left on
    the way out. When the caller fails, what it finished is still stored and its own error is
    the one raised (a ledger error then is suppressed). A writer without a ledger stores nothing.
    `memoize` writes through one."""

    def __init__(self, ledger: "Ledger | None", table: str, every: int) -> None:
        self.ledger, self.table, self.every = ledger, table, every
        self.pending: list[tuple] = []
        self.stored = 0

    def add(self, row: tuple) -> bool:
        """Queue a row; True when this row completed a batch and the batch was stored."""
        if self.ledger is None:
            return False
        self.pending.append(row)
        if len(self.pending) < self.every:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        if self.ledger is not None and self.pending:
            self.stored += self.ledger.put_many(self.table, self.pending)
            self.pending.clear()

    def __enter__(self) -> "BatchWriter":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.flush()
            return
        with contextlib.suppress(LedgerError):  # keep what finished before the caller's error
            self.flush()


class PostgresLedger(Ledger):
    """The ledger's tables on a PostgreSQL server, for many runs and workers on many machines:
    a key already stored keeps its row (INSERT ... ON CONFLICT DO NOTHING), so writers that
    race on one key store it once. Keys are BYTEA; the values as in the SQLite file."""

    def __init__(self, url: str, connect_timeout_s: float = 30.0, batch_size: int = 2000) -> None:
        import psycopg2

        self.path = re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", str(url))  # errors never show the password
        self.batch_size = batch_size
        deadline = time.monotonic() + connect_timeout_s
        while True:  # a server still starting (or restarting) refuses connections for a while
            try:
                self._db = psycopg2.connect(str(url), connect_timeout=max(1, int(connect_timeout_s)))
                break
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise self._error("cannot be reached", exc) from exc
                time.sleep(1.0)
        try:
            self._set_up()
        except psycopg2.Error as exc:
            self._db.close()
            raise self._error("is not a usable ledger", exc) from exc
        except BaseException:
            self._db.close()
            raise

    def _set_up(self) -> None:
        with self._db, self._db.cursor() as cur:  # one transaction
            cur.execute("SELECT pg_advisory_xact_lock(8127001)")  # two writers creating the tables take turns
            cur.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            cur.execute("SELECT value FROM meta WHERE name='schema'")
            row = cur.fetchone()
            if row is not None and row[0] != SCHEMA_VERSION:
                raise self._error("is not a usable ledger", ValueError(f"schema {row[0]!r}, expected {SCHEMA_VERSION!r}"))
            for table, columns in TABLES.items():
                typed = ", ".join(c.replace(" REAL", " DOUBLE PRECISION") for c in columns)
                cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (key BYTEA PRIMARY KEY, {typed})")
            cur.execute("INSERT INTO meta VALUES ('schema', %s) ON CONFLICT (name) DO NOTHING", (SCHEMA_VERSION,))

    def get_many(self, table: str, keys: Iterable[bytes]) -> dict[bytes, tuple]:
        import psycopg2

        wanted = sorted(set(keys))
        columns = ", ".join(c.split()[0] for c in TABLES[table])
        found: dict[bytes, tuple] = {}
        try:
            with self._db, self._db.cursor() as cur:
                for start in range(0, len(wanted), _QUERY_CHUNK):
                    cur.execute(f"SELECT key, {columns} FROM {table} WHERE key = ANY(%s)",
                                ([psycopg2.Binary(k) for k in wanted[start:start + _QUERY_CHUNK]],))
                    for key, *values in cur:
                        found[bytes(key)] = tuple(values)
        except psycopg2.Error as exc:
            raise self._error("cannot be read", exc) from exc
        return found

    def put_many(self, table: str, rows: Iterable[tuple]) -> int:
        import psycopg2
        from psycopg2.extras import execute_values

        rows = sorted(rows, key=lambda r: r[0])  # key order: writers lock keys in one order, never deadlock
        try:
            for start in range(0, len(rows), self.batch_size):
                with self._db, self._db.cursor() as cur:  # a transaction per batch
                    execute_values(cur, f"INSERT INTO {table} VALUES %s ON CONFLICT (key) DO NOTHING",
                                   [(psycopg2.Binary(r[0]), *r[1:]) for r in rows[start:start + self.batch_size]])
        except psycopg2.Error as exc:
            raise self._error("cannot be written", exc) from exc
        return len(rows)

    def _query(self, sql: str) -> Iterable[tuple]:
        with self._db, self._db.cursor() as cur:
            cur.execute(sql)
            yield from cur

    def _error(self, what: str, exc: BaseException) -> LedgerError:
        return LedgerError(f"ledger {self.path} {what}: {exc}")


T = TypeVar("T")


@dataclass(frozen=True)
class Memo(Generic[T]):
    results: list[T]  # one per key, in order
    found: frozenset[bytes]  # the keys the ledger held
    hits: int  # keys answered from the ledger
    computed: int  # distinct missing keys computed (the rest of the misses repeat one of them)
    stored: int  # rows written


def memoize(ledger: Ledger | None, table: str, keys: Sequence[bytes], read: Callable[[tuple], T],
            compute: Callable[[list[int], Callable[[int, T], None]], None],
            to_row: Callable[[bytes, T], tuple | None], every: int) -> Memo[T]:
    """A result for each key: read from its stored row (`read(row)`) where the ledger has one;
    else computed once per distinct key: `compute(positions, done)` gets the first position of
    each missing key and calls `done(position, result)` as each finishes, and the result is
    stored as `to_row(key, result)` (None: not stored), committed every `every`. If `compute`
    raises, what finished before is stored and its error raised. Without a ledger, identical
    keys are still computed once. The LLM resource's completions and the sandbox's verdicts
    both go through here."""
    positions: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys):
        positions.setdefault(key, []).append(i)
    results: list[Any] = [None] * len(keys)
    found = ledger.get_many(table, positions) if ledger is not None else {}
    for key, row in found.items():
        value = read(row)
        for i in positions[key]:
            results[i] = value
    missing = [where[0] for key, where in positions.items() if key not in found]

    def done(position: int, result: T) -> None:
        key = keys[position]
        for i in positions[key]:
            results[i] = result
        row = to_row(key, result)
        if row is not None:
            writer.add(row)

    with BatchWriter(ledger, table, every) as writer:
        if missing:
            compute(missing, done)
    return Memo(results, frozenset(found), sum(len(positions[key]) for key in found), len(missing), writer.stored)


if __name__ == "__main__":  # python -m autoif_dagster.resources.ledger export|import LEDGER FILE
    import sys

    command, ledger_path, file_path = sys.argv[1:4]
    with Ledger(ledger_path) as ledger:
        moved = ledger.export_completions(file_path) if command == "export" else ledger.import_completions(file_path)
    print(f"{command}: {moved} completions ({ledger_path} {'->' if command == 'export' else '<-'} {file_path})")
