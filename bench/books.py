"""`make bench`, books: generated books through the pipeline on the local defaults.

In fresh processes, on the same generated books (cached in .bench/books/):

- pipeline, 1 worker and 2 workers: the batched backfill (one Dagster run per
  --per-run books, ranges of the dynamic partitions) on a SQLite instance as `make dev`
  runs it: a worker is a run process, and the local instance runs two runs at once
  (dagster.yaml, max_concurrent_runs); books/s of each, and their ratio;
- pipeline, 1 run with a pool of 2: one run at a time, each with BOOKS_WORKERS=2
  (summaries in two processes, embeddings in two threads), for comparison;
- direct, 2 workers and 1: the same engine functions called in one process without
  Dagster, with a pool of 2 and of 1; Dagster's overhead is the 2-worker pipeline's extra
  wall time over the first, as a share of the pipeline's, and, like for like, the 1-worker
  pipeline's over the second;
- encode: SentenceTransformer.encode alone, in one thread, on the summaries, against the
  1-worker pipeline's book_embedding steps.

    python -m bench.books [--books 2000] [--words 1500] [--per-run 100] [--bar-only] [--no-write]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone

from bench.doc import write_between_markers
from bench.search_terms import BENCH_DIR, ROOT, machine

BEGIN, END = "<!-- bench:books:begin -->", "<!-- bench:books:end -->"
SECTION = f"""
## Books: summaries, embeddings and the index

Command: `.venv/bin/python -m bench.books` (`bench/books.py`, part of `make bench`). The
bar (issue «Books…»): two workers ≥ 1.6× one worker; the embedder inside the pipeline
≥ 0.8× of bare `SentenceTransformer.encode`; Dagster's overhead ≤ 15% of the total.

{BEGIN}
{END}
"""


def scenario(name: str, data, home, *args: str, fresh: bool = True) -> dict:
    """One books_run scenario in a fresh process; `fresh` starts it with an empty HOME."""
    if fresh:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.books_run", name, str(data), str(home), *args],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"books_run {name} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=int, default=2000)
    parser.add_argument("--words", type=int, default=1500)
    parser.add_argument("--per-run", type=int, default=100)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--bar-only", action="store_true", help="skip the two comparison rows (pool of 2, direct with 1)")
    args = parser.parse_args()

    from engine.books.sample_books import write_books

    data = BENCH_DIR / "books" / f"corpus_{args.books}_{args.words}"
    if not (data / "books" / "texts").exists():
        print(f"generating {args.books} books of {args.words} words in {data} (once)", flush=True)
        write_books(data, args.books, words=args.words, seed=11)
    homes = BENCH_DIR / "books" / "homes"
    per_run = ["--per-run", str(args.per_run)]
    one = scenario("pipeline", data, homes / "w1", "--runs-at-once", "1", "--workers", "1", *per_run)
    print(f"pipeline, 1 worker: {one['books'] / one['seconds']:.1f} books/s in {one['runs']} runs", flush=True)
    two = scenario("pipeline", data, homes / "w2", "--runs-at-once", "2", "--workers", "1", *per_run)
    print(f"pipeline, 2 workers: {two['books'] / two['seconds']:.1f} books/s", flush=True)
    pool = None if args.bar_only else scenario("pipeline", data, homes / "pool2", "--runs-at-once", "1", "--workers", "2", *per_run)
    if pool:
        print(f"pipeline, 1 run at a time with a pool of 2: {pool['books'] / pool['seconds']:.1f} books/s", flush=True)
    direct = scenario("direct", data, homes / "direct", "--workers", "2")
    print(f"direct, 2 workers: {direct['books'] / direct['seconds']:.1f} books/s", flush=True)
    direct_one = None if args.bar_only else scenario("direct", data, homes / "direct1", "--workers", "1")
    if direct_one:
        print(f"direct, 1 worker: {direct_one['books'] / direct_one['seconds']:.1f} books/s", flush=True)
    bare = scenario("encode", data, homes / "direct", "--workers", "1", fresh=False)  # its summaries
    print(f"bare encode: {bare['books'] / bare['seconds']:.1f} texts/s", flush=True)

    speedup = one["seconds"] / two["seconds"]
    embed_ratio = bare["seconds"] / one["steps"]["book_embedding"]
    overhead = (two["seconds"] - direct["seconds"]) / two["seconds"]
    overhead_one = (one["seconds"] - direct_one["seconds"]) / one["seconds"] if direct_one else None
    rows = [
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Command: `python -m bench.books --books {args.books} --words {args.words} --per-run {args.per_run}"
        + (" --bar-only" if args.bar_only else "") + "`; one try each.",
        "Step seconds are summed over the run processes.",
        "",
        "| scenario | books | runs | seconds | books/s | book_text s | book_summary s | book_embedding s | book_search_index s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    scenarios = (
        ("pipeline, 1 worker (1 run at a time, pool of 1)", one),
        ("pipeline, 2 workers (2 runs at a time, pool of 1)", two),
        ("pipeline, 1 run at a time, pool of 2", pool),
        ("direct calls, one process, pool of 2", direct),
        ("direct calls, one process, pool of 1", direct_one),
    )
    for label, r in [(label, r) for label, r in scenarios if r is not None]:
        steps = r["steps"]
        rows.append(
            f"| {label} | {r['books']:,} | {r.get('runs', '-')} | {r['seconds']:.1f} | {r['books'] / r['seconds']:.1f} | "
            + " | ".join(f"{steps[s]:.1f}" for s in ("book_text", "book_summary", "book_embedding", "book_search_index"))
            + " |"
        )
    rows += [
        "",
        f"- two workers against one: **{speedup:.2f}×** (bar ≥ 1.6×)",
        f"- embedder inside the pipeline (the 1-worker run's book_embedding steps, model load included) against bare "
        f"`encode` of the same {bare['books']:,} summaries in one thread ({bare['seconds']:.1f} s): **{embed_ratio:.2f}×** (bar ≥ 0.8×)",
        f"- Dagster's overhead, (pipeline with 2 workers − direct calls with a pool of 2) / pipeline: **{overhead:.0%}** "
        "(bar ≤ 15%; below zero when two run processes outrun one process's pool)",
    ]
    if overhead_one is not None:
        rows.append(f"- the same, like for like, one worker each: (pipeline − direct calls with a pool of 1) / pipeline: **{overhead_one:.0%}**")
    table = "\n".join(rows)
    print("\n" + table)
    if not args.no_write:
        write_between_markers(BEGIN, END, table, SECTION)



if __name__ == "__main__":
    main()
