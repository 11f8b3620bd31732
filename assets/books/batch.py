"""One books step over its batch of partitions: progress while it runs, per-book outcomes,
the failure threshold, and the metadata every step records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import dagster as dg

from assets.metadata import cost_metadata
from engine.books.stages import DONE, FAILED, SKIPPED, BookOutcome
from engine.measure import Progress, StepMeasure

_SHOWN = 20  # failures listed by name in the metadata; all of them are in the log


def collect(
    context: dg.AssetExecutionContext, what: str, outcomes: Iterable[BookOutcome], total: int, interval: float
) -> list[BookOutcome]:
    """Drain the outcomes, logging books done, rate and ETA every `interval` seconds, and
    each failure as it happens."""
    progress = Progress(context.log, what, total=total, interval=interval, unit="books")
    collected = []
    for outcome in outcomes:
        collected.append(outcome)
        if outcome.status == FAILED:
            context.log.warning(f"{what}: {outcome.book} failed: {outcome.reason}")
        for warning in outcome.warnings:
            context.log.warning(f"{what}: {outcome.book}: {warning}")
        progress.update(len(collected), len(collected))
    progress.update(len(collected), len(collected), force=True)
    return collected


def check_failures(outcomes: list[BookOutcome], max_fraction: float, what: str) -> None:
    failed = [o for o in outcomes if o.status == FAILED]
    if outcomes and len(failed) / len(outcomes) > max_fraction:
        examples = "; ".join(f"{o.book}: {o.reason}" for o in failed[:5])
        raise dg.Failure(
            f"{what}: {len(failed)} of {len(outcomes)} books failed, over the {max_fraction:.0%} limit ({examples})",
            metadata={"failed": len(failed), "books": len(outcomes)},
        )


def batch_metadata(measure: StepMeasure, outcomes: list[BookOutcome], **extra) -> dict:
    statuses = Counter(o.status for o in outcomes)
    failed = [o for o in outcomes if o.status == FAILED]
    metadata = cost_metadata(
        measure,
        books=dg.MetadataValue.int(len(outcomes)),
        rows_in=dg.MetadataValue.int(len(outcomes)),
        rows_out=dg.MetadataValue.int(statuses[DONE] + statuses[SKIPPED]),
        rejects=dg.MetadataValue.int(statuses[FAILED]),
        done=dg.MetadataValue.int(statuses[DONE]),
        skipped_unchanged=dg.MetadataValue.int(statuses[SKIPPED]),
        failed=dg.MetadataValue.int(statuses[FAILED]),
        books_per_second=dg.MetadataValue.float(round(measure.rate(len(outcomes)), 2)),
        model_calls=dg.MetadataValue.int(sum(o.model_calls for o in outcomes)),
        **extra,
    )
    if failed:
        lines = [f"- `{o.book}`: {o.reason}" for o in failed[:_SHOWN]]
        if len(failed) > _SHOWN:
            lines.append(f"- … and {len(failed) - _SHOWN} more (run log)")
        metadata["failures"] = dg.MetadataValue.md("\n".join(lines))
    return metadata


def batch_result(what: str, measure: StepMeasure, outcomes: list[BookOutcome], max_failure_fraction: float, **extra):
    """The step's MaterializeResult, after failing the batch if too many of its books failed."""
    check_failures(outcomes, max_failure_fraction, what)
    return dg.MaterializeResult(metadata=batch_metadata(measure, outcomes, **extra))
