"""`make bench`: the search-terms pipeline against an ijson-only baseline, same file, same run.

For each report size: generate the report once (cached in .bench/), then alternately run
the baseline and the full pipeline in fresh processes, `--repeat` times each, and keep
each one's best time (these machines are noisy; the best run is the least disturbed).
Figures go to stdout and into docs/PERFORMANCE.md between the bench markers.

    python -m bench.search_terms [--sizes 0.3GB,3GB] [--repeat 2] [--no-write]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

from bench.doc import write_between_markers
from engine.measure import human_bytes
from engine.search_terms.sample_report import parse_size, terms_for_size, write_report_file

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
WEEK = date(2024, 1, 7)
BEGIN, END = "<!-- bench:search_terms:begin -->", "<!-- bench:search_terms:end -->"


def report_for(size: int) -> Path:
    path = BENCH_DIR / "reports" / f"search_terms_{size}.json"
    if not path.exists():
        print(f"generating a {human_bytes(size)} report at {path} (once)", flush=True)
        tmp = path.with_suffix(".partial")
        write_report_file(tmp, WEEK, terms=terms_for_size(size), seed=size, gzipped=False)
        tmp.rename(path)
    return path


def run(module: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DAGSTER_HOME": ""}
    env.pop("DAGSTER_HOME")
    out = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{module} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{os.cpu_count()} cores ({cpu}), {mem / 2**30:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.3GB,3GB")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/PERFORMANCE.md")
    args = parser.parse_args()

    results = []
    for size_text in args.sizes.split(","):
        size = parse_size(size_text)
        report = report_for(size)
        baseline, pipeline = None, None
        for attempt in range(args.repeat):
            b = run("bench.ijson_baseline", str(report))
            p = run("bench.pipeline_run", str(report), str(BENCH_DIR / "home"), WEEK.isoformat())
            print(
                f"{size_text} try {attempt + 1}: ijson {b['rows'] / b['seconds']:,.0f} rows/s, "
                f"pipeline {p['rows'] / p['seconds']:,.0f} rows/s, peak RSS {mib(p['peak_rss'])}",
                flush=True,
            )
            assert b["rows"] == p["rows"], f"baseline saw {b['rows']} rows, the pipeline {p['rows']}"
            baseline = b if baseline is None or b["seconds"] < baseline["seconds"] else baseline
            pipeline = p if pipeline is None or p["seconds"] < pipeline["seconds"] else pipeline
        results.append((size_text, report.stat().st_size, baseline, pipeline))

    lines = [
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Command: `make bench` (`python -m bench.search_terms --sizes {args.sizes} --repeat {args.repeat}`); "
        "best of the tries for each side.",
        "",
        "| report | rows | ijson-only rows/s | pipeline rows/s | ratio | pipeline seconds | peak RSS of the run's process | its RSS before the run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, nbytes, b, p in results:
        b_rate, p_rate = b["rows"] / b["seconds"], p["rows"] / p["seconds"]
        lines.append(
            f"| {human_bytes(nbytes)} | {p['rows']:,} | {b_rate:,.0f} | {p_rate:,.0f} | {p_rate / b_rate:.2f}× | "
            f"{p['seconds']:.1f} | {mib(p['peak_rss'])} | {mib(p['rss_before_run'])} |"
        )
    lines += ["", "Per step (best pipeline run of each size):", "", "| report | step | seconds | peak RSS |", "|---|---|---|---|"]
    for _, nbytes, _, p in results:
        for step, figures in p["steps"].items():
            lines.append(f"| {human_bytes(nbytes)} | {step} | {figures['seconds']:.2f} | {figures['peak_rss_mb']:.0f} MiB |")
    table = "\n".join(lines)
    print("\n" + table)
    if not args.no_write:
        write_between_markers(BEGIN, END, table, f"\n## Search terms\n\n{BEGIN}\n{END}\n")


if __name__ == "__main__":
    main()
