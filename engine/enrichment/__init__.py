"""Enrichment: every record of a file through a rate-limited HTTP API, nothing lost.

Plain Python, no Dagster. The modules, in the order a record meets them:

- source: which object-store files are inputs, their format, and their partition keys;
- readers: CSV, JSON (NDJSON or a top-level array) and Parquet read in bounded chunks;
- template: the request built from a record's fields, and the response fields kept;
- limiter: a GCRA schedule of send times, in-process or shared through Redis;
- breaker: pauses sending while the API fails, probes, resumes or gives up;
- retry: which outcomes are retried, and how long to wait;
- client: the aiohttp session and one request;
- pipeline: chunks → bounded-concurrency workers → per-chunk results;
- output: per-chunk enriched and dead-letter Parquet under deterministic keys, and the summary;
- run: one input file end to end (resume, progress, the final account);
- stats: requests, latency percentiles, retries by cause;
- jsoncodec: JSON on the hot path (orjson, the standard library where it is missing);
- settings: the flat settings a person sets → the dataclasses above;
- cli: one file from the command line (tests in other processes, the benchmark).
"""
