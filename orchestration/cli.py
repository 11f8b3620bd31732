"""`floodgate`: commands beside the Dagster UI.

    floodgate search "text" [--k 10] [--mode vector|keyword|hybrid]

answers from the search index of the deployment (DAGSTER_DEPLOYMENT, FLOODGATE_HOME...),
embedding the query with the same embedder as the books.
"""

from __future__ import annotations

import argparse
import sys
import warnings


def search(text: str, k: int, mode: str) -> list[tuple[str, float, str | None]]:
    """(book, score, title) of the best k books for the query."""
    import dagster as dg

    from orchestration.deployment import resources

    selected = {name: r for name, r in resources().items() if name in ("embedder", "search_index")}
    with dg.build_resources(selected) as built:
        vector = None if mode == "keyword" else built.embedder.build(threads=1).embed([text])[0]
        hits = built.search_index.search(text=text, vector=vector, k=k, mode=mode)
        titles = built.search_index.titles([book for book, _ in hits]) if hits else {}
    return [(book, score, titles.get(book)) for book, score in hits]


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")  # Dagster's notes on backfill_policy
    parser = argparse.ArgumentParser(prog="floodgate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    find = commands.add_parser("search", help="search the books index")
    find.add_argument("text")
    find.add_argument("--k", type=int, default=10)
    find.add_argument("--mode", choices=["vector", "keyword", "hybrid"], default="hybrid")
    args = parser.parse_args(argv)
    hits = search(args.text, args.k, args.mode)
    if not hits:
        print("no books match", file=sys.stderr)
        return 1
    for rank, (book, score, title) in enumerate(hits, start=1):
        print(f"{rank:>3}  {score:8.4f}  {book}" + (f"  ({title})" if title else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
