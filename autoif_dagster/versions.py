"""Code versions Dagster can see: an asset's `code_version` is a fingerprint of what defines it.

`code_version(fn)` hashes the asset function's source and, followed through the names its
code uses, every function, class and constant of this package it reaches (an LLM stage by its
own fingerprint, `Stage.version`: its rendered prompt, output schema and parser), plus the
defaults of the config sections it reads (`autoif.responses` counts the `responses` section;
`autoif.scoring` does not count for an asset that never reads it). So a prompt edit changes
the version of exactly the asset that sends that prompt, a filter edit the asset that filters,
and the UI shows those as stale and, once they are re-materialized with new output, what
depends on them (each output's data version is a hash of its content: `output()`).

Config given per run (launchpad, run config) is not code and Dagster cannot see it ahead of
a run; output it changes gets a new data version, so what depends on it becomes stale then.
"""

import gc
import hashlib
import inspect
import types
import warnings
from collections.abc import Collection
from typing import Any

import dagster as dg
import polars as pl
from pydantic import BaseModel

from .method.stages import Stage

PACKAGE = __name__.split(".")[0]
# What an asset records about its output, not what the output is.
NOT_DEFINING = {f"{PACKAGE}.assets.reporting"}


def code_version(fn: types.FunctionType) -> str:
    parts: list[str] = []
    seen: set[int] = set()
    _collect(fn, parts, seen)  # a wrapper (rounds.per_round) counts, and so does what it wraps
    fn = inspect.unwrap(fn)
    _collect(fn, parts, seen)
    names = _names(fn.__code__)
    for param in inspect.signature(fn).parameters.values():
        kind = param.annotation
        if inspect.isclass(kind) and issubclass(kind, BaseModel) and _ours(kind):
            for field, info in kind.model_fields.items():  # the config sections it reads
                if field in names:
                    parts.append(f"{kind.__name__}.{field}={info.default!r}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def with_code_versions(assets: list) -> list:
    """The assets, each with its function's fingerprint as its code version (a multi-asset's
    outputs share their function's)."""
    def versioned(a: dg.AssetsDefinition) -> dg.AssetsDefinition:
        version = code_version(a.op.compute_fn.decorated_fn)  # the function under @asset
        return a.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version))
    return [versioned(a) for a in assets]


def frame_version(df: pl.DataFrame) -> str:
    """A hash of a frame's schema and rows: its data version (what a checkpoint was trained on)."""
    digest = hashlib.sha256(str(df.schema).encode())
    if df.height:  # polars' row hash: stable within a polars version (an upgrade re-versions all data once)
        digest.update(df.hash_rows(seed=0).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def output(df: pl.DataFrame, metadata: dict[str, Any], output_name: str = "result") -> dg.Output:
    """An asset's output with its content as its data version: downstream assets are stale
    when, and only when, what they read has changed."""
    return versioned_output(df, frame_version(df), metadata, output_name)


def versioned_output(value: Any, version: str, metadata: dict[str, Any], output_name: str = "result") -> dg.Output:
    """An output with the given data version (a frame's content hash, a checkpoint's provenance)."""
    with warnings.catch_warnings():  # `data_version` is marked beta; we rely on it knowingly
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(value, output_name=output_name, data_version=dg.DataVersion(version), metadata=metadata)


def _ours(obj: Any) -> bool:
    return _defining_module(getattr(obj, "__module__", None) or "")


def _defining_module(name: str) -> bool:
    return name.split(".")[0] == PACKAGE and name not in NOT_DEFINING


def _source(obj: Any) -> str:
    """inspect.getsource, with no garbage collection while it runs. For a class, CPython 3.11
    parses the whole module with `ast`, whose recursion depth lives in state shared by nested
    parses: a collection inside the parse can run a finalizer that parses too (a traceback
    logged from a `__del__`: 3.11 formats its carets with `ast`), and the outer parse then fails
    with "AST constructor recursion depth mismatch". Garbage a test or a long-lived process
    (the UI's code server) left behind made loading the definitions fail that way."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return inspect.getsource(obj)
    finally:
        if collecting:
            gc.enable()


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions, comprehensions, lambdas
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _collect(obj: Any, parts: list[str], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Stage):
        parts.append(f"stage {obj.name} {obj.version}")
    elif inspect.isfunction(obj) and _ours(obj):
        parts.append(_source(obj))
        _follow(obj.__globals__, _names(obj.__code__), parts, seen)
    elif inspect.isclass(obj) and _ours(obj):
        parts.append(_source(obj))
        module = vars(inspect.getmodule(obj))
        for member in vars(obj).values():
            func = getattr(member, "__func__", member)  # static and class methods
            if inspect.isfunction(func):
                _follow(module, _names(func.__code__), parts, seen)
    elif not callable(obj) and not isinstance(obj, types.ModuleType):
        text = repr(sorted(obj, key=repr)) if isinstance(obj, (set, frozenset)) else repr(obj)  # sets: hash-seeded order
        if " at 0x" not in text:  # an address would change the version in every process
            parts.append(text)


def _follow(namespace: dict, names: set[str], parts: list[str], seen: set[int]) -> None:
    """What `names` refer to in a module's namespace, this package's modules' attributes
    included (`stages.QUALITY`, `selection.pass_rate`)."""
    for name in sorted(names):
        if name not in namespace:
            continue
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            if _defining_module(value.__name__):
                for attr in sorted(names):
                    if attr in vars(value):
                        _collect(vars(value)[attr], parts, seen)
        elif _ours(value) or isinstance(value, Stage) or (
                not callable(value) and namespace.get("__name__", "").split(".")[0] == PACKAGE):
            _collect(value, parts, seen)


def stale_assets(instance: dg.DagsterInstance, defs: dg.Definitions, round_key: str | None = None,
                 within: Collection[dg.AssetKey] | None = None) -> dict[dg.AssetKey, list[str]]:
    """Assets (of `within`, e.g. one job's; None: all) never materialized in `instance`
    (round-partitioned ones: for `round_key`), or whose code version or inputs' data versions
    changed since they were, each with why (Dagster's own stale status, as the UI shows it)."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._time import get_current_datetime

    graph = defs.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    stale: dict[dg.AssetKey, list[str]] = {}
    for key in sorted(graph.materializable_asset_keys):
        if within is not None and key not in within:
            continue
        partition = round_key if graph.get(key).partitions_def is not None else None  # None: the latest
        status = resolver.get_status(key, partition)
        if status == StaleStatus.MISSING:
            stale[key] = ["never materialized"]
        elif status == StaleStatus.STALE:
            stale[key] = [f"{c.key.asset_key.to_user_string()} {c.reason}"
                          for c in resolver.get_stale_root_causes(key, partition)]
    return stale


def to_refresh(stale: dict[dg.AssetKey, list[str]], defs: dg.Definitions,
               within: Collection[dg.AssetKey] | None = None) -> list[dg.AssetKey]:
    """The stale assets and everything downstream of them (of `within`), for one run: Dagster
    marks a downstream asset stale only once its input has a new data version, and in one run
    that is now. What reads unchanged input re-derives it from the ledger, asking nothing."""
    selection = dg.AssetSelection.assets(*stale).downstream().required_multi_asset_neighbors()
    return sorted(k for k in selection.resolve(defs.resolve_asset_graph()) if within is None or k in within)
