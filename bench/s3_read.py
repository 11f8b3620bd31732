"""S3 read path against plain boto3 streaming: same object, same server, same run.

Runs moto's S3 server on loopback (`local_services.s3_server.s3_server_process`),
uploads one object of `--size` random bytes (multipart, boto3's `upload_file`), then
alternately, `--repeat` times each, reads it to the end:

- **ours**: `S3ObjectStore.open_read` (a head_object, then ranged GETs read straight into
  the caller's buffer), in the report reader's access pattern
  (engine/search_terms/report_reader.py `_Source`): `read(2)` for the gzip magic,
  `read(65534)` for the top-level members, then `readinto` a view of `chunk_mb` (1.5 MB,
  assets/search_terms/settings.py) at a time;
- **smart-open**: `smart_open.open(..., "rb")` with a 1 MiB buffer, in the same pattern:
  the reader the store used before, kept here to show why it no longer does;
- **boto3**: `get_object(...)["Body"].read(chunk)` with the same chunk size.

Each side keeps its best time (these machines are noisy). One untimed pass of each
checks that both return the uploaded bytes (sha256). The bytes are random because the
store never looks at them (no content-encoding; gzip is told by the reader), so only the
size matters, random data is made in a second, and no layer on the way can compress it.
The server runs in a process of its own, so it does not take the GIL from the reader.

    python -m bench.s3_read [--size 512MB] [--repeat 3] [--no-write]
"""

import argparse
import hashlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.doc import write_between_markers
from bench.search_terms import BENCH_DIR, machine
from engine.measure import human_bytes
from engine.search_terms.sample_report import parse_size

BEGIN, END = "<!-- bench:s3_read:begin -->", "<!-- bench:s3_read:end -->"
BUCKET, KEY = "bench", "search_terms/reports/2024-01-07.json"
SECTION = f"""
## Search terms: reading reports from S3

Command: `.venv/bin/python -m bench.s3_read` (`bench/s3_read.py`). It puts one object of
random bytes on moto's S3 server on loopback and alternately reads it to the end through
`S3ObjectStore.open_read`, in the report reader's access pattern (1.5 MB `readinto`
calls), through smart-open's reader in the same pattern, and through plain boto3
(`get_object` and `Body.read` of the same size), keeping each side's best of the tries.
The bar: the store's MB/s at least 0.9× boto3's. smart-open's reader copies every byte
three to four times on the way (BytesIO, bytearray, bytes, the caller's buffer) and did
not reach it at any buffer size (0.42–0.84×); the store's reader resumes a broken stream
the same way (a ranged GET from the byte reached, with backoff) and reads into the
caller's buffer.

{BEGIN}
{END}
"""


def random_file(size: int) -> Path:
    path = BENCH_DIR / "s3_read" / f"random_{size}.bin"
    if not path.exists() or path.stat().st_size != size:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for start in range(0, size, 8 << 20):
                f.write(os.urandom(min(8 << 20, size - start)))
    return path


def read_like_the_parser(opened, chunk: int, digest=None) -> int:
    """Read as engine/search_terms/report_reader.py's _Source does; return the byte count."""
    buf = memoryview(bytearray(chunk))
    with opened as f:
        n = 0
        for size in (2, 65534):  # the gzip magic, then the reader's first top-level fill
            data = f.read(size)
            n += len(data)
            if digest:
                digest.update(data)
        while got := f.readinto(buf):
            n += got
            if digest:
                digest.update(buf[:got])
    return n


def read_ours(store, chunk: int, digest=None) -> int:
    return read_like_the_parser(store.open_read(KEY), chunk, digest)


def read_smart_open(client, chunk: int, digest=None) -> int:
    import smart_open

    opened = smart_open.open(
        f"s3://{BUCKET}/{KEY}", "rb", compression="disable", transport_params={"client": client, "buffer_size": 1 << 20}
    )
    return read_like_the_parser(opened, chunk, digest)


def read_boto3(client, chunk: int, digest=None) -> int:
    body = client.get_object(Bucket=BUCKET, Key=KEY)["Body"]
    n = 0
    while data := body.read(chunk):
        n += len(data)
        if digest:
            digest.update(data)
    body.close()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512MB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/PERFORMANCE.md")
    args = parser.parse_args()

    import boto3

    from assets.search_terms.settings import SearchTermsSettings
    from local_services.s3_server import TEST_CREDENTIALS, create_bucket, s3_server_process
    from resources.s3_object_store import S3ObjectStore

    size = parse_size(args.size)
    chunk = int(SearchTermsSettings().chunk_mb * (1 << 20))  # as assets/search_terms/parse.py
    source = random_file(size)
    with s3_server_process() as endpoint:
        create_bucket(endpoint, BUCKET)
        client = boto3.client("s3", endpoint_url=endpoint, **TEST_CREDENTIALS)
        client.upload_file(str(source), BUCKET, KEY)
        store = S3ObjectStore(bucket=BUCKET, endpoint_url=endpoint, **TEST_CREDENTIALS)

        with open(source, "rb") as f:
            expected = hashlib.file_digest(f, "sha256").hexdigest()
        sides = (("boto3", read_boto3, client), ("ours", read_ours, store), ("smart-open", read_smart_open, client))
        for name, read, target in sides:
            digest = hashlib.sha256()
            n = read(target, chunk, digest)
            assert (n, digest.hexdigest()) == (size, expected), f"{name} read {n} bytes, sha256 {digest.hexdigest()}"

        best = {name: float("inf") for name, _, _ in sides}
        for attempt in range(args.repeat):
            for name, read, target in sides:
                start = time.perf_counter()
                n = read(target, chunk)
                seconds = time.perf_counter() - start
                assert n == size, f"{name} read {n} bytes of {size}"
                best[name] = min(best[name], seconds)
                print(f"try {attempt + 1}: {name} {size / seconds / 1e6:,.0f} MB/s ({seconds:.2f} s)", flush=True)

    ours, base, smart = (size / best[name] / 1e6 for name in ("ours", "boto3", "smart-open"))
    table = "\n".join(
        [
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
            f"Command: `python -m bench.s3_read --size {args.size} --repeat {args.repeat}`; "
            f"best of {args.repeat} tries each, reads of {chunk / 2**20:g} MiB; all read the same sha256.",
            "",
            "| object | boto3 MB/s | S3ObjectStore MB/s | ratio | smart-open MB/s | ratio |",
            "|---|---|---|---|---|---|",
            f"| {human_bytes(size)} | {base:,.0f} | {ours:,.0f} | {ours / base:.2f}× | {smart:,.0f} | {smart / base:.2f}× |",
            "",
            f"The bar (≥ 0.90×) is {'met' if ours >= 0.9 * base else 'not met'}.",
        ]
    )
    print("\n" + table)
    if not args.no_write:
        write_between_markers(BEGIN, END, table, SECTION)


if __name__ == "__main__":
    main()
