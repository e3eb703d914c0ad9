"""What every asset records in its materialization metadata, so a run's funnel reads in the UI:
rows in, rows out, rows dropped per reason, a preview, and plots where they say more."""

import base64
import io
from collections import Counter
from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl


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


def _plot(title: str, draw: Any) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    draw(ax)
    ax.set_title(title)
    ax.set_ylabel("rows")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    encoded = base64.b64encode(buf.getvalue()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")
