"""Metadata every materialization records: what it read, wrote, rejected, and what it cost."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from engine.measure import StepMeasure


def cost_metadata(measure: StepMeasure, **extra) -> dict:
    """Seconds and memory of a step."""
    return {
        "seconds": dg.MetadataValue.float(round(measure.seconds, 3)),
        "peak_rss_mb": dg.MetadataValue.float(round(measure.peak_rss / 2**20, 1)),
        "start_rss_mb": dg.MetadataValue.float(round(measure.start_rss / 2**20, 1)),
        **extra,
    }


def step_metadata(measure: StepMeasure, *, rows_in: int, rows_out: int, rejects: int = 0, **extra) -> dict:
    """Rows in and out, rejects, throughput, seconds and memory of a step."""
    return cost_metadata(
        measure,
        rows_in=dg.MetadataValue.int(rows_in),
        rows_out=dg.MetadataValue.int(rows_out),
        rejects=dg.MetadataValue.int(rejects),
        rows_per_second=dg.MetadataValue.float(round(measure.rate(rows_in), 1)),
        **extra,
    )


def preview(table: pa.Table, max_rows: int = 5) -> dg.MetadataValue:
    """A small Markdown table of the first rows."""
    table = table.slice(0, max_rows)
    names = table.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in table.to_pylist():
        cells = ("" if row[n] is None else str(row[n]).replace("|", "\\|")[:60] for n in names)
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))
