"""A verdict cache: what a verifier said about an input, so that a re-run does not ask again.

A verdict is a function of (sandbox version, verifier source, input string) for a verifier
that behaves (no randomness, no clock, no state kept between calls): SandboxResource keys
each verdict by a hash of the three. TIMEOUT and CRASH verdicts are never stored: whether a
call finishes in time depends on the machine's load, and a crash can come from outside the
verifier (the supervisor or container killed, memory pressure); they are run again.

One SQLite file in WAL mode, one table. Several processes (runs) may share it: readers do
not block writers, writers take turns (waiting up to `busy_timeout_s`). Writes are committed
in batches; a crash loses at most the batch being written, and SQLite's journal keeps the
file consistent. A file that is not such a cache, or is damaged, raises VerdictCacheError
naming it.
"""

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from ..sandbox.protocol import CRASH, KINDS, TIMEOUT, Verdict

SCHEMA_VERSION = "1"
NOT_CACHED = (TIMEOUT, CRASH)
_QUERY_CHUNK = 500  # keys per SELECT ... IN (...): under every SQLite's variable limit
_KEY_DOMAIN = b"autoif-verdict-key-v1\0"
# 128 bits: a chance collision stays below 1e-20 for a billion verdicts; shorter keys make
# lookups ~1.5x faster than full 32-byte digests.
KEY_BYTES = 16


class VerdictCacheError(RuntimeError):
    """The cache file cannot be used (not a cache, damaged, unreadable)."""


def verdict_keys(version: str, jobs: Sequence[tuple[str, Sequence[str]]]) -> list[list[bytes]]:
    """For each (source, inputs) pair, the cache key of each input: a SHA-256 of the sandbox
    version, the source and the input (each hashed on its own first, so that no choice of
    strings can make two different triples collide by concatenation), cut to KEY_BYTES."""
    scope = hashlib.sha256(_KEY_DOMAIN + _digest(version)).digest()
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


def _digest(text: str) -> bytes:
    # surrogatepass: LLM text may hold lone surrogates, which strict UTF-8 refuses.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class VerdictCache:
    """get_many / put_many over one SQLite file; use as a context manager (or call close())."""

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
            raise self._error("is not a usable verdict cache", exc) from exc

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
            if not tables:
                db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                db.execute("CREATE TABLE verdicts (key BLOB PRIMARY KEY, kind TEXT NOT NULL, "
                           "detail TEXT NOT NULL) WITHOUT ROWID")
            elif "meta" not in tables or "verdicts" not in tables:
                raise sqlite3.DatabaseError(f"a SQLite file with other tables ({', '.join(sorted(tables))})")
            else:
                row = db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
                if row is None or row[0] != SCHEMA_VERSION:
                    raise sqlite3.DatabaseError(f"schema {row[0] if row else None!r}, expected {SCHEMA_VERSION!r}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, Verdict]:
        """The stored verdicts among `keys`."""
        wanted = sorted(set(keys))  # in key order: fewer B-tree pages visited
        found: dict[bytes, Verdict] = {}
        shared: dict[tuple[str, str], Verdict] = {}  # one object per distinct verdict
        try:
            for start in range(0, len(wanted), _QUERY_CHUNK):
                chunk = wanted[start:start + _QUERY_CHUNK]
                rows = self._db.execute(
                    f"SELECT key, kind, detail FROM verdicts WHERE key IN ({','.join('?' * len(chunk))})", chunk
                )
                for key, kind, detail in rows:
                    if kind not in KINDS:
                        raise sqlite3.DatabaseError(f"unknown verdict kind {kind!r}")
                    verdict = shared.get((kind, detail))
                    if verdict is None:
                        verdict = shared[(kind, detail)] = Verdict(kind, detail)
                    found[bytes(key)] = verdict
        except sqlite3.Error as exc:
            raise self._error("cannot be read", exc) from exc
        return found

    def put_many(self, items: Iterable[tuple[bytes, Verdict]]) -> int:
        """Store verdicts (TIMEOUT and CRASH are skipped), committing every batch_size;
        the number stored. A key already present keeps its verdict."""
        rows = sorted((key, v.kind, v.detail) for key, v in items if v.kind not in NOT_CACHED)  # key order: ~2x faster
        try:
            for start in range(0, len(rows), self.batch_size):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR IGNORE INTO verdicts VALUES (?, ?, ?)",
                                         rows[start:start + self.batch_size])
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise self._error("cannot be written", exc) from exc
        return len(rows)

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "VerdictCache":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _error(self, what: str, exc: BaseException) -> VerdictCacheError:
        return VerdictCacheError(f"verdict cache {self.path} {what}: {exc} (delete the file to start afresh)")
