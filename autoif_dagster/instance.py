"""The Dagster instances we ship, and what makes one unfit for this graph.

The embedded default (`data/dagster.local.yaml`: SQLite under $AUTOIF_HOME/dagster) is written
by `autoif run` / `autoif ui` where there is none; the production one is deploy/dagster.yaml
(PostgreSQL). Both hold pool slots per run (pools.py).
"""

import shutil
from pathlib import Path

import dagster as dg

from .pools import GPU, POOLS

LOCAL_YAML = Path(__file__).with_name("data") / "dagster.local.yaml"


def ensure_local(dagster_home: Path) -> None:
    """The embedded instance's dagster.yaml, unless the directory already has one (the user's)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(LOCAL_YAML, dagster_home / "dagster.yaml")


def prepare(instance: dg.DagsterInstance) -> list[str]:
    """Give the project's pools their default limit now, and return what is still wrong.

    The run queue applies `default_limit` to a pool only from the tick after it first sees the
    pool, so two runs queued together on a fresh instance both started (seen on Dagster 1.13):
    the limit must exist before the first run is queued."""
    storage = instance.event_log_storage
    for pool in set(POOLS) - storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(pool)
    return problems(instance)


def problems(instance: dg.DagsterInstance) -> list[str]:
    """What in this instance's pool settings would stall runs or let two load models at once."""
    found = []
    config = instance.get_concurrency_config().pool_config
    if config.pool_granularity is None or config.pool_granularity.value != "run":
        granularity = config.pool_granularity.value if config.pool_granularity else "op"
        found.append(f"concurrency.pools.granularity is {granularity!r} on this instance: a run's engine "
                     "outlives the step that holds its pool slot, so two runs can load models at once; "
                     "set it to 'run' (deploy/dagster.yaml)")
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    for pool in POOLS:
        if limits.get(pool, config.default_pool_limit) == 0:
            what = "loads a model" if pool == GPU else "runs verifiers"
            found.append(f"pool {pool!r} has limit 0 on this instance: no run that {what} can start "
                         f"(dagster instance concurrency set {pool} 1)")
    return found
