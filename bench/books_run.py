"""One scenario of the books benchmark, in fresh processes; prints one JSON line.

    python -m bench.books_run pipeline DATA HOME --runs-at-once R --workers W --per-run N
        the batched backfill: ceil(books / N) Dagster runs over ranges of the partitions,
        as BackfillPolicy.multi_run plans them, on a SQLite instance in HOME (the
        repository's dagster.yaml), R runs at a time, as the instance's run queue
        (max_concurrent_runs) runs them: R processes, each running every R-th batch, each
        run with a pool of W workers
    python -m bench.books_run direct DATA HOME --workers W
        the same engine functions called directly, all books at once, in one process, no Dagster
    python -m bench.books_run encode DATA HOME --workers W
        SentenceTransformer.encode alone, in W threads, on the summaries a previous scenario
        wrote in HOME

DATA holds the generated books (books/texts/...); results and the index go under HOME.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def store_for(data: Path, home: Path):
    """A store under HOME holding a copy of the generated texts (a few MB), so that every
    scenario starts without results."""
    from resources.object_store import LocalDirectoryObjectStore

    texts = home / "data" / "books" / "texts"
    if not texts.exists():
        shutil.copytree(data / "books" / "texts", texts)
    return LocalDirectoryObjectStore(root=str(home / "data"))


def book_ids(store) -> list[str]:
    from engine.books.source import book_id

    return sorted(b for info in store.list("books/texts/") if (b := book_id(info.key, "books/texts")))


def pipeline(data: Path, home: Path, runs_at_once: int, workers: int, per_run: int) -> dict:
    """Registers the partitions, then runs the batches in `runs_at_once` processes."""
    import dagster as dg

    from partitions.books import books

    store = store_for(data, home)
    keys = book_ids(store)
    # the instance `make dev` runs on: the repository's dagster.yaml in a home of its own
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster" / "dagster.yaml")
    dg.DagsterInstance.from_config(str(home / "dagster")).add_dynamic_partitions(books.name, keys)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    shares = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.books_run", "runs", str(data), str(home), "--workers", str(workers),
             "--per-run", str(per_run), "--slot", str(slot), "--runs-at-once", str(runs_at_once)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        )
        for slot in range(runs_at_once)
    ]
    results = []
    for share in shares:
        out, _ = share.communicate()
        if share.returncode != 0:
            raise SystemExit(f"a share of the runs failed (exit {share.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    steps: dict[str, float] = {}
    for result in results:
        for step, seconds in result["steps"].items():
            steps[step] = steps.get(step, 0.0) + seconds  # summed over the processes
    return {
        "books": len(keys),
        "runs": sum(r["runs"] for r in results),
        "seconds": max(r["end"] for r in results) - min(r["start"] for r in results),
        "steps": steps,
    }


def runs(data: Path, home: Path, workers: int, per_run: int, slot: int, runs_at_once: int) -> dict:
    """Every `runs_at_once`-th batch of the backfill, from batch `slot`, one run each."""
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from assets import books as books_assets
    from assets.books.settings import BooksSettings
    from resources.book_models import LocalEmbedder, LocalSummarizer
    from resources.search_index import DuckDBSearchIndex

    store = store_for(data, home)
    resources = {
        "object_store": store,
        "summarizer": LocalSummarizer(),
        "embedder": LocalEmbedder(),
        "search_index": DuckDBSearchIndex(path=str(home / "books_index.duckdb")),
        "books_settings": BooksSettings(workers=workers, progress_interval_seconds=600),
    }
    job = dg.Definitions.merge(books_assets.defs, dg.Definitions(resources=resources)).resolve_job_def("books")
    keys = book_ids(store)
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    batches = [keys[first : first + per_run] for first in range(0, len(keys), per_run)][slot::runs_at_once]
    step_seconds: dict[str, float] = {}
    start = time.time()  # wall clock: the parent compares the processes' times
    for batch in batches:
        tags = {ASSET_PARTITION_RANGE_START_TAG: batch[0], ASSET_PARTITION_RANGE_END_TAG: batch[-1]}
        result = job.execute_in_process(instance=instance, tags=tags)
        assert result.success
        for event in result.get_asset_materialization_events():
            m = event.step_materialization_data.materialization
            if event.partition == batch[0]:  # one materialization per partition, one figure per step
                step = m.asset_key.path[-1]
                step_seconds[step] = step_seconds.get(step, 0.0) + float(m.metadata["seconds"].value)
    return {"runs": len(batches), "start": start, "end": time.time(), "steps": step_seconds}


def direct(data: Path, home: Path, workers: int) -> dict:
    from assets.books.settings import BooksSettings
    from engine.books.stages import book_document, embed_books, examine_text
    from engine.books.workers import in_threads, summarize_in_workers
    from resources.book_models import LocalEmbedder, LocalSummarizer
    from resources.search_index import DuckDBSearchIndex

    store = store_for(data, home)
    layout = BooksSettings().layout()
    keys = book_ids(store)
    index = DuckDBSearchIndex(path=str(home / "books_index.duckdb"))
    steps = {}
    start = time.perf_counter()
    t = time.perf_counter()
    list(in_threads(lambda b: examine_text(store, layout, b), keys, workers))
    steps["book_text"] = time.perf_counter() - t
    t = time.perf_counter()
    list(summarize_in_workers(store, LocalSummarizer(), layout, keys, workers))
    steps["book_summary"] = time.perf_counter() - t
    t = time.perf_counter()
    model = LocalEmbedder().build(threads=workers)
    for first in range(0, len(keys), 256):
        embed_books(store, layout, model, keys[first : first + 256])
    steps["book_embedding"] = time.perf_counter() - t
    t = time.perf_counter()
    index.upsert([d for b in keys if (d := book_document(store, layout, b)) is not None])
    steps["book_search_index"] = time.perf_counter() - t
    return {"books": len(keys), "seconds": time.perf_counter() - start, "steps": steps}


def encode(data: Path, home: Path, workers: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from engine.books.embed import model_copies
    from engine.books.records import read_record
    from engine.books.stages import BooksLayout

    store = store_for(data, home)
    layout = BooksLayout()
    texts = [read_record(store, layout.result(b, "summary"))["summary"] for b in book_ids(store)]
    models = model_copies(workers)
    for model in models:
        model.encode(texts[:64], batch_size=64)  # warm-up, as the pipeline's load is not in its step either
    bounds = [len(texts) * i // workers for i in range(workers + 1)]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:  # as many threads as copies, as the embedder does
        list(pool.map(
            lambda i: models[i].encode(texts[bounds[i] : bounds[i + 1]], batch_size=64, normalize_embeddings=True, convert_to_numpy=True),
            range(workers),
        ))
    return {"books": len(texts), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["pipeline", "runs", "direct", "encode"])
    parser.add_argument("data", type=Path)
    parser.add_argument("home", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--per-run", type=int, default=100)
    parser.add_argument("--runs-at-once", type=int, default=1)
    parser.add_argument("--slot", type=int, default=0)
    args = parser.parse_args()
    os.environ["DAGSTER_HOME"] = str(args.home / "dagster")  # the instance's event log lives there
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")  # as make sets it
    if args.scenario == "pipeline":
        figures = pipeline(args.data, args.home, args.runs_at_once, args.workers, args.per_run)
    elif args.scenario == "runs":
        figures = runs(args.data, args.home, args.workers, args.per_run, args.slot, args.runs_at_once)
    elif args.scenario == "direct":
        figures = direct(args.data, args.home, args.workers)
    else:
        figures = encode(args.data, args.home, args.workers)
    print(json.dumps(figures))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
