"""`autoif trace ID`: the whole chain of any row back to its seed instruction.

Ids name their kind ("resp-...", schemas.ID_PREFIXES), so every `*_id` value in a row
resolves to the one asset that holds it; the walk follows them up to the instruction and the
query. Each row comes with the Dagster run that materialized its asset, the stored
generation behind it (a `generation_id` names a completion in the ledger: the request and
the raw text), and what the method decided about it (an instruction's verifiers, test cases,
back-translations and NLI labels; a response's verdict per verifier and its quality score).
"""

import json
import re
from pathlib import Path
from typing import Any

import polars as pl

from .home import Home
from .resources.io_manager import read_artifact
from .resources.ledger import Ledger, LedgerError
from .schemas import GENERATION_PREFIX, ID_ASSETS, PRIMARY_KEYS, REFERENCES

# asset -> (asset, column) whose rows pointing at this row are shown with it
DETAILS = {
    "augmented_instructions": [("verifiers", "instruction_id"), ("test_cases", "instruction_id"),
                               ("back_translations", "instruction_id"), ("nli_verdicts", "instruction_id"),
                               ("consistent_instructions", "instruction_id")],
    "responses": [("response_verdicts", "response_id"), ("quality_scores", "response_id")],
}
_ID = re.compile(r"^[a-z]+-[0-9a-f]{16,32}$")


class TraceError(ValueError):
    """An id that is malformed or names no row, or a home without artifacts."""


class Tracer:
    def __init__(self, home: str | Path) -> None:
        self.home = Home(Path(home))
        if not self.home.assets.is_dir():
            raise TraceError(f"no artifacts in {self.home.root}: run `autoif run --home {self.home.root}` first")
        self._frames: dict[str, pl.DataFrame | None] = {}
        self._materializations: dict[str, dict[str, str]] | None = None

    def frame(self, asset: str) -> pl.DataFrame | None:
        if asset not in self._frames:
            self._frames[asset] = read_artifact(self.home.assets, asset)
        return self._frames[asset]

    def rows(self, asset: str, column: str, value: str, round_key: str | None = None) -> list[dict[str, Any]]:
        """Rows of `asset` whose `column` is `value`; of `round_key`'s round where the asset has
        rounds (another round may hold a row with the same content, so the same id)."""
        df = self.frame(asset)
        if df is None:
            return []
        if round_key is not None and "round" in df.columns:
            df = df.filter(pl.col("round") == round_key)
        return df.filter(pl.col(column) == value).to_dicts()

    def find(self, row_id: str) -> tuple[str, dict[str, Any]]:
        """The asset and row an id names."""
        prefix = row_id.split("-", 1)[0]
        candidates = [ID_ASSETS[prefix]] if prefix in ID_ASSETS else list(PRIMARY_KEYS)  # user query ids
        for asset in candidates:
            found = self.rows(asset, PRIMARY_KEYS[asset], row_id)
            if found:
                return asset, found[0]
        if prefix not in ID_ASSETS and not _ID.match(row_id):
            raise TraceError(f"malformed id {row_id!r}: ids look like resp-1a2b3c4d5e6f7a8b "
                             f"(prefixes: {', '.join(sorted(ID_ASSETS))})")
        raise TraceError(f"no row with id {row_id!r} in {self.home.assets} (looked in {', '.join(candidates)})")

    def trace(self, row_id: str) -> dict[str, Any]:
        """The row `row_id` names, with its parents (recursively) and details, as a tree."""
        if row_id.startswith(GENERATION_PREFIX + "-"):
            return {"asset": "ledger", "id": row_id, "generation": self.generation(row_id)}
        asset, row = self.find(row_id)
        return self._node(asset, row, set())

    def _node(self, asset: str, row: dict[str, Any], seen: set[str]) -> dict[str, Any]:
        own = row[PRIMARY_KEYS[asset]]
        seen.add(own)
        node: dict[str, Any] = {"asset": asset, "id": own, **self.materialization_of(asset), "row": row}
        if row.get("generation_id"):
            node["generation"] = self.generation(row["generation_id"])
        round_key = row.get("round")
        details = {a: self.rows(a, col, own, round_key) for a, col in DETAILS.get(asset, [])}
        if details:
            node["details"] = details
        parents = []
        declared = {col: parent for child, col, parent, _ in REFERENCES if child == asset}
        for column, value in row.items():
            if column == PRIMARY_KEYS[asset] or not column.endswith("_id") or not isinstance(value, str):
                continue
            # the id's own prefix names its asset; unprefixed ids (your queries' own) follow the
            # declared reference of their column
            parent = ID_ASSETS.get(value.split("-", 1)[0]) or declared.get(column)
            if parent is not None and value not in seen:
                found = self.rows(parent, PRIMARY_KEYS[parent], value, round_key)
                parents.append(self._node(parent, found[0], seen) if found
                               else {"asset": parent, "id": value, "missing": True})
        if parents:
            node["parents"] = parents
        return node

    def generation(self, generation_id: str) -> dict[str, Any]:
        ledger_path = self.home.ledger
        try:
            key = bytes.fromhex(generation_id.split("-", 1)[1])
        except (IndexError, ValueError):
            raise TraceError(f"malformed generation id {generation_id!r}") from None
        if isinstance(ledger_path, Path) and not ledger_path.exists():
            return {"missing": f"no ledger at {ledger_path}"}
        try:
            with Ledger(ledger_path) as ledger:
                found = ledger.get_many("completions", [key]).get(key)
        except LedgerError as exc:
            raise TraceError(str(exc)) from exc
        if found is None:
            return {"missing": f"not in the ledger {ledger_path}"}
        text, finish_reason, n_tokens, model, request, run_id, _, _ = found
        return {"model": model, "request": json.loads(request), "text": text, "finish_reason": finish_reason,
                "n_tokens": n_tokens, "run_id": run_id}

    def materialization_of(self, asset: str) -> dict[str, str]:
        """The Dagster run that last materialized `asset` (from the instance in HOME/dagster),
        with the asset's code version and data version then."""
        if self._materializations is None:
            self._materializations = {}
            dagster_home = self.home.dagster
            if (dagster_home / "dagster.yaml").exists():
                import dagster as dg

                with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                    for name in PRIMARY_KEYS:
                        event = instance.get_latest_materialization_event(dg.AssetKey(name))
                        if event is not None:
                            tags = event.asset_materialization.tags or {}
                            self._materializations[name] = {
                                "run_id": event.run_id, "code_version": tags.get("dagster/code_version", ""),
                                "data_version": tags.get("dagster/data_version", "")}
        return self._materializations.get(asset, {})


def render(node: dict[str, Any], indent: int = 0, width: int = 100) -> str:
    """The tree as indented text, long values cut to `width`."""
    pad = "  " * indent

    def short(value: Any) -> str:
        text = " ".join(str(value).split())
        return text if len(text) <= width else text[: width - 3] + "..."

    run = f"  (run {node['run_id'][:8]}, code {node['code_version']})" if node.get("run_id") else ""
    lines = [f"{pad}{node['asset']} {node['id']}{run}" + ("  MISSING" if node.get("missing") else "")]
    for key, value in (node.get("row") or {}).items():
        if key != PRIMARY_KEYS.get(node["asset"]) and not key.endswith("_id") and value is not None:
            lines.append(f"{pad}  {key}: {short(value)}")
    generation = node.get("generation")
    if generation:
        if "missing" in generation:
            lines.append(f"{pad}  generation: {generation['missing']}")
        else:
            asked = generation["request"]["messages"][-1]["content"]
            lines.append(f"{pad}  generation by {generation['model']} (run {generation['run_id'][:8] or '-'}, "
                         f"{generation['n_tokens']} tokens, {generation['finish_reason']})")
            lines.append(f"{pad}    asked: {short(asked)}")
            lines.append(f"{pad}    wrote: {short(generation['text'])}")
    for asset, rows in (node.get("details") or {}).items():
        lines.append(f"{pad}  {asset}: {len(rows)}")
        for row in rows:
            fields = {k: v for k, v in row.items() if k not in ("instruction_id", "response_id", "prompt_id")}
            lines.append(f"{pad}    - {short(fields)}")
    for parent in node.get("parents", []):
        lines.append(render(parent, indent + 1, width))
    return "\n".join(lines)
