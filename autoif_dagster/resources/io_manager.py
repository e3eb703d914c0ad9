"""Parquet storage for every artifact, checked against its declared schema on write."""

import os
import uuid
from typing import Any

import dagster as dg
import polars as pl
from upath import UPath

from ..schemas import SCHEMAS, conform, frame


class _ParquetIO(dg.UPathIOManager):
    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        name = context.asset_key.path[-1]
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{name}: expected a polars DataFrame, got {type(obj).__name__}")
        if name in SCHEMAS:
            obj = conform(name, obj)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: a crash never leaves a truncated file that the
        # next run would read as the artifact.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with tmp.open("wb") as f:
            obj.write_parquet(f)
        if tmp.protocol in ("", "file", "local"):
            os.replace(tmp.path, path.path)
        else:
            tmp.rename(path)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pl.DataFrame:
        try:
            return _read(path)
        except FileNotFoundError as exc:  # e.g. a round whose upstream was never made: say which, and how
            name = context.asset_key.path[-1]
            part = f" for round {path.stem}" if context.has_asset_partitions else ""
            # still a FileNotFoundError: Dagster skips it where missing rounds are allowed (ALL_ROUNDS)
            raise FileNotFoundError(f"{name}{part} has not been materialized (no {path}): materialize it "
                                    "first, or the whole round (`autoif run --round DAY`)") from exc

    # A round-partitioned artifact is one file per round (rounds.py); a run that writes or
    # reads several rounds holds them in one frame with a `round` column.
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if context.has_asset_partitions and isinstance(obj, pl.DataFrame) and "round" in obj.columns:
            keys = list(context.asset_partition_keys)
            stray = set(obj["round"].unique().to_list()) - set(keys)
            if stray:  # never file one round's rows under another
                raise ValueError(f"{context.asset_key.path[-1]}: rows of round(s) {sorted(map(str, stray))} "
                                 f"in an output for {keys}")
            if len(keys) > 1:  # a single-run backfill; UPathIOManager writes one partition only
                for key, path in self._get_paths_for_partitions(context).items():
                    self.make_directory(path.parent)
                    self.dump_to_path(context, obj.filter(pl.col("round") == key), path)
                context.add_output_metadata({"rounds_written": len(keys)})
                return
        super().handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        if context.has_asset_partitions and context.definition_metadata.get("allow_missing_partitions"):
            # every round so far (ALL_ROUNDS): read the ones on disk; Dagster would try each day
            # since the first and log a warning for every one never made
            paths = self._get_paths_for_partitions(context)
            return _rounds(context, [self.load_from_path(context, paths[key]) for key in sorted(paths)
                                     if paths[key].exists()])
        value = super().load_input(context)
        if isinstance(value, dict):  # the rounds of a range run
            return _rounds(context, [value[key] for key in sorted(value)])
        return value


def _rounds(context: dg.InputContext, frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Several rounds of an artifact as one frame, in round order (empty, with its schema, for none)."""
    return pl.concat(frames, how="vertical") if frames else frame(context.asset_key.path[-1], [])


def read_artifact(assets_dir: str | os.PathLike, name: str) -> pl.DataFrame | None:
    """An artifact as the IO manager stored it under `assets_dir`: one file, or one per
    round (every round, in order); None if it was never written."""
    base = UPath(assets_dir)
    single = base / f"{name}.parquet"
    if single.exists():
        return _read(single)
    frames = [_read(part) for part in sorted((base / name).glob("*.parquet"))] if (base / name).exists() else []
    return pl.concat(frames, how="vertical") if frames else None


def _read(path: UPath) -> pl.DataFrame:
    with path.open("rb") as f:
        return pl.read_parquet(f)


class ParquetIOManager(dg.ConfigurableIOManagerFactory):
    """One Parquet file per asset (and per partition) under `base_dir` (any fsspec URL)."""

    base_dir: str

    def create_io_manager(self, context: dg.InitResourceContext) -> _ParquetIO:
        return _ParquetIO(base_path=UPath(self.base_dir))
