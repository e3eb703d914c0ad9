"""Parquet storage for every artifact, checked against its declared schema on write."""

import os
import uuid
from typing import Any

import dagster as dg
import polars as pl
from upath import UPath

from ..schemas import SCHEMAS, conform


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
        with path.open("rb") as f:
            return pl.read_parquet(f)


class ParquetIOManager(dg.ConfigurableIOManagerFactory):
    """One Parquet file per asset (and per partition) under `base_dir` (any fsspec URL)."""

    base_dir: str

    def create_io_manager(self, context: dg.InitResourceContext) -> _ParquetIO:
        return _ParquetIO(base_path=UPath(self.base_dir))
