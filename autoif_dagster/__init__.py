"""autoif-dagster: the AutoIF method (Qwen, arXiv 2406.13542) as a Dagster asset graph."""
