"""What every asset records in its materialization metadata, so a run's funnel reads in the UI:
rows in, rows out, rows dropped per reason, a preview, and plots where they say more."""

import base64
import io
from collections import Counter
from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl

from ..schemas import ROUND_STAGES

RECENT = 7  # rounds in a combined dataset's yield table and plot


def md_table(rows: list[Mapping[str, Any]], columns: list[str], width: int = 80) -> str:
    def cell(v: Any) -> str:
        text = str(v).replace("\n", " ").replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def funnel(rows_in: int, out: pl.DataFrame, dropped: Counter, **extra: Any) -> dict[str, Any]:
    """The metadata every stage records. `dropped` maps reason -> rows dropped for it."""
    dropped = +dropped  # reasons that dropped nothing are noise
    meta: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": out.height,
        "dropped_total": sum(dropped.values()),
        "dropped": dg.MetadataValue.json(dict(sorted(dropped.items()))),
        "dagster/row_count": out.height,
    }
    if dropped:
        table = [{"reason": r, "rows": n} for r, n in dropped.most_common()]
        meta["drop_reasons"] = dg.MetadataValue.md(md_table(table, ["reason", "rows"]))
    if out.height:
        text_cols = [c for c, t in out.schema.items() if t == pl.String][:4]
        meta["preview"] = dg.MetadataValue.md(md_table(out.head(5).to_dicts(), text_cols, 60))
    meta.update(extra)
    return meta


def histogram(values: list[float], title: str, bins: int | list[float] = 10) -> dg.MetadataValue:
    """A histogram as an inline PNG in markdown (the UI renders it on the asset page)."""
    return _plot(title, lambda ax: ax.hist(values, bins=bins, color="#4f46e5", edgecolor="white"))


def bars(labels: list[str], values: list[int], title: str) -> dg.MetadataValue:
    """Rows per label (a round, a stage) as bars, inline like `histogram`."""
    return _plot(title, lambda ax: (ax.bar(labels, values, color="#4f46e5"), ax.tick_params(axis="x", labelrotation=45)))


def curves(series: Mapping[str, list[tuple[int, float]]], title: str, ylabel: str) -> dg.MetadataValue:
    """Lines of (x, y) points, one per named series (a training run's loss per step), inline
    like `histogram`."""
    def draw(ax: Any) -> None:
        for name, points in series.items():
            ax.plot([x for x, _ in points], [y for _, y in points], marker="." if len(points) < 50 else None,
                    label=name)
        ax.set_xlabel("step")
        if len(series) > 1:
            ax.legend(fontsize=7)

    return _plot(title, draw, ylabel=ylabel)


def stage_yields(instance: dg.DagsterInstance, rounds: list[str]) -> dict[str, dict[str, int]]:
    """Rows out of every partitioned stage, per round: {stage: {round: rows}}, from each
    round's latest materialization (its `rows_by_round`), in the order the data flows."""
    found: dict[str, dict[str, int]] = {}
    for stage in ROUND_STAGES:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), asset_partitions=rounds), limit=10 * len(rounds)).records
        for record in reversed(records):  # oldest first: a later materialization of a round wins
            materialization = record.asset_materialization
            by_round = materialization.metadata.get("rows_by_round")
            if by_round is not None and materialization.partition in rounds:
                found.setdefault(stage, {})[materialization.partition] = by_round.value.get(materialization.partition, 0)
    return found


def stage_yield_metadata(name: str, own: Mapping[str, int], instance: dg.DagsterInstance,
                         rounds: list[str]) -> dict[str, dg.MetadataValue]:
    """For combined dataset `name` (`own`: its rows per round): each round's yield at every
    stage before it, as a table and a plot (one line per round; the last RECENT rounds)."""
    recent = rounds[-RECENT:]
    yields = {**stage_yields(instance, recent), name: {r: own.get(r, 0) for r in recent}}
    stages = list(yields)
    table = [{"stage": stage, **{r: yields[stage].get(r, "") for r in recent}} for stage in stages]

    def draw(ax: Any) -> None:
        for r in recent:
            ax.plot(range(len(stages)), [yields[s].get(r, 0) for s in stages], marker="o", label=r)
        ax.set_xticks(range(len(stages)), stages, rotation=60, ha="right", fontsize=7)
        ax.set_yscale("symlog")
        ax.legend(fontsize=6)

    return {"yield_per_stage": dg.MetadataValue.md(md_table(table, ["stage", *recent])),
            "yield_per_stage_plot": _plot("rows out of each stage, per round", draw, size=(7, 4))}


def _plot(title: str, draw: Any, size: tuple[float, float] = (5, 3), ylabel: str = "rows") -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    encoded = base64.b64encode(buf.getvalue()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")
