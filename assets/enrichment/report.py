"""What an enrichment step records: the request side (requests, achieved rate, latency,
retries by cause, breaker openings), dead letters by reason, and each file's account."""

from __future__ import annotations

from collections import Counter

import dagster as dg

from engine.enrichment.run import FileResult
from engine.enrichment.stats import RequestStats


def dead_by_reason(results: list[tuple[str, FileResult]]) -> dict[str, int]:
    """From the files' manifests: chunks written by earlier runs count too."""
    total: Counter = Counter()
    for _, result in results:
        total.update(result.account.dead_by_reason)
    return dict(total)


def request_metadata(stats: RequestStats, results: list[tuple[str, FileResult]]) -> dict:
    latency = stats.latency_ms()
    sending = sum(r.stats.sending_seconds for _, r in results)
    return {
        "requests": dg.MetadataValue.int(stats.requests),
        "records_sent": dg.MetadataValue.int(stats.records_sent),
        "requests_per_second": dg.MetadataValue.float(round(stats.requests / sending, 1) if sending else 0.0),
        "latency_p50_ms": dg.MetadataValue.float(latency["p50"] or 0.0),
        "latency_p95_ms": dg.MetadataValue.float(latency["p95"] or 0.0),
        "latency_p99_ms": dg.MetadataValue.float(latency["p99"] or 0.0),
        "retries": dg.MetadataValue.int(sum(stats.retries.values())),
        "retries_by_cause": dg.MetadataValue.json(dict(stats.retries)),
        "answers_by_status": dg.MetadataValue.json({str(k): v for k, v in stats.statuses.items()}),
        "breaker_openings": dg.MetadataValue.int(stats.breaker_openings),
        "limiter_send_times_dropped": dg.MetadataValue.int(stats.limiter_dropped),
        "dead_letters_by_reason": dg.MetadataValue.json(dead_by_reason(results)),
        "limiter": dg.MetadataValue.text("; ".join(sorted({r.limiter for _, r in results}))),
    }


def file_metadata(results: list[tuple[str, FileResult]], output_prefix: str, store) -> dict:
    return {
        "files": dg.MetadataValue.int(len(results)),
        "chunks_written": dg.MetadataValue.int(sum(r.account.chunks for _, r in results) - sum(r.account.chunks_resumed for _, r in results)),
        "chunks_resumed": dg.MetadataValue.int(sum(r.account.chunks_resumed for _, r in results)),
        "records_resumed": dg.MetadataValue.int(sum(r.account.records_resumed for _, r in results)),
        "output": dg.MetadataValue.path(store.uri(output_prefix.rstrip("/") + "/")),
        "accounts": dg.MetadataValue.md(account_table(results)),
    }


def account_table(results: list[tuple[str, FileResult]]) -> str:
    lines = ["| file | records | enriched | dead letters | unfinished | balanced |", "|---|---|---|---|---|---|"]
    for partition, r in results:
        a = r.account
        lines.append(f"| `{partition}` | {a.records:,} | {a.enriched:,} | {a.dead_letters:,} | {a.unfinished:,} | {'yes' if a.balanced else 'NO'} |")
    return "\n".join(lines)


def failure_metadata(failed: FileResult, done: list[tuple[str, FileResult]]) -> dict:
    """The failed file's account (every record: enriched, dead letter or unfinished), and the
    request side up to the failure."""
    a, s = failed.account, failed.stats
    return {
        "records": dg.MetadataValue.int(a.records),
        "enriched": dg.MetadataValue.int(a.enriched),
        "dead_letters": dg.MetadataValue.int(a.dead_letters),
        "unfinished": dg.MetadataValue.int(a.unfinished),
        "balanced": dg.MetadataValue.bool(a.balanced),
        "chunks_written": dg.MetadataValue.int(a.chunks_written),
        "chunks": dg.MetadataValue.int(a.chunks),
        "requests": dg.MetadataValue.int(s.requests),
        "retries_by_cause": dg.MetadataValue.json(dict(s.retries)),
        "breaker_openings": dg.MetadataValue.int(s.breaker_openings),
        "files_completed_before": dg.MetadataValue.int(len(done)),
    }
