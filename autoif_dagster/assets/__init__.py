"""Thin Dagster wrappers, one module per stage family; the logic lives in `method/`."""
