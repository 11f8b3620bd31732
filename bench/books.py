"""`make bench`, books: generated books through the pipeline on the local defaults.

In fresh processes, on the same generated books (cached in .bench/books/):

- pipeline, 1 worker and 2 workers: the batched backfill (one Dagster run per
  --per-run books, ranges of the dynamic partitions) on a SQLite instance, as `make dev`
  runs it: books/s of each, and their ratio;
- direct, 2 workers: the same engine functions called in one process without Dagster;
  Dagster's overhead is the pipeline's extra wall time over it, as a share of the pipeline's;
- encode: SentenceTransformer.encode alone on the summaries the 2-worker pipeline made,
  with the same threads, against the book_embedding step's time for them.

    python -m bench.books [--books 2000] [--words 1500] [--per-run 100] [--no-write]
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
    args = parser.parse_args()

    from engine.books.sample_books import write_books

    data = BENCH_DIR / "books" / f"corpus_{args.books}_{args.words}"
    if not (data / "books" / "texts").exists():
        print(f"generating {args.books} books of {args.words} words in {data} (once)", flush=True)
        write_books(data, args.books, words=args.words, seed=11)
    homes = BENCH_DIR / "books" / "homes"
    per_run = ["--per-run", str(args.per_run)]
    one = scenario("pipeline", data, homes / "w1", "--workers", "1", *per_run)
    print(f"pipeline, 1 worker: {one['books'] / one['seconds']:.1f} books/s in {one['runs']} runs", flush=True)
    two = scenario("pipeline", data, homes / "w2", "--workers", "2", *per_run)
    print(f"pipeline, 2 workers: {two['books'] / two['seconds']:.1f} books/s", flush=True)
    direct = scenario("direct", data, homes / "direct", "--workers", "2")
    print(f"direct, 2 workers: {direct['books'] / direct['seconds']:.1f} books/s", flush=True)
    bare = scenario("encode", data, homes / "direct", "--workers", "2", fresh=False)  # its summaries
    print(f"bare encode: {bare['books'] / bare['seconds']:.1f} texts/s", flush=True)

    speedup = one["seconds"] / two["seconds"]
    embed_ratio = bare["seconds"] / two["steps"]["book_embedding"]
    overhead = (two["seconds"] - direct["seconds"]) / two["seconds"]
    rows = [
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Command: `python -m bench.books --books {args.books} --words {args.words} --per-run {args.per_run}`; one try each.",
        "",
        "| scenario | books | runs | seconds | books/s | book_text s | book_summary s | book_embedding s | book_search_index s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in (("pipeline, 1 worker", one), ("pipeline, 2 workers", two), ("direct calls, 2 workers", direct)):
        steps = r["steps"]
        rows.append(
            f"| {label} | {r['books']:,} | {r.get('runs', '-')} | {r['seconds']:.1f} | {r['books'] / r['seconds']:.1f} | "
            + " | ".join(f"{steps[s]:.1f}" for s in ("book_text", "book_summary", "book_embedding", "book_search_index"))
            + " |"
        )
    rows += [
        "",
        f"- two workers against one: **{speedup:.2f}×** (bar ≥ 1.6×)",
        f"- embedder inside the pipeline (book_embedding step, model load included) against bare `encode` of the same "
        f"{bare['books']:,} summaries ({bare['seconds']:.1f} s): **{embed_ratio:.2f}×** (bar ≥ 0.8×)",
        f"- Dagster's overhead, (pipeline − direct) / pipeline with 2 workers: **{overhead:.0%}** (bar ≤ 15%)",
    ]
    table = "\n".join(rows)
    print("\n" + table)
    if not args.no_write:
        write_between_markers(BEGIN, END, table, SECTION)



if __name__ == "__main__":
    main()
