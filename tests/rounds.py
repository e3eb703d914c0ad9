"""Hand-built frames and asset contexts for round-partitioned assets (autoif_dagster/rounds.py):
rows of a partitioned artifact carry their round, and its asset runs for one."""

import dagster as dg
import polars as pl

from autoif_dagster import schemas
from autoif_dagster.rounds import FIRST_ROUND

ROUND = FIRST_ROUND


def frame(name: str, rows: list[dict], round_key: str = ROUND) -> pl.DataFrame:
    """schemas.frame, with each row in `round_key` where the artifact has rounds."""
    if "round" in schemas.SCHEMAS[name]:
        rows = [{"round": round_key, **row} for row in rows]
    return schemas.frame(name, rows)


def context(**kwargs) -> dg.AssetExecutionContext:
    """A context for calling a partitioned asset directly, for the first round."""
    return dg.build_asset_context(partition_key=ROUND, **kwargs)
