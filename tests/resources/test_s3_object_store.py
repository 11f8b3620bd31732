"""S3ObjectStore against a real S3 API: a moto server on a loopback port, reached over HTTP
by boto3 and smart-open, and, for broken reads, through a TCP proxy that cuts the
connection in the middle of a response."""

import gzip
import io
import json
import socket
import socketserver
import threading
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.search_terms.report_reader import ReportReader
from engine.search_terms.sample_report import write_report
from local_services.s3_server import TEST_CREDENTIALS as CREDENTIALS
from resources.s3_object_store import S3ObjectStore

BUCKET = "floodgate-test"


@pytest.fixture
def store(s3_endpoint, request):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    bucket = f"{BUCKET}-{abs(hash(request.node.name)) % 10**8}"
    client.create_bucket(Bucket=bucket)
    return S3ObjectStore(bucket=bucket, prefix="fg/", endpoint_url=s3_endpoint, part_size_mb=5, **CREDENTIALS)


def test_a_write_is_published_whole_on_success_and_not_at_all_on_error(store):
    payload = bytes(range(256)) * 50_000  # 12.8 MB: three parts of 5 MB
    with store.open_write("a/big.bin") as f:
        for i in range(0, len(payload), 1 << 20):
            f.write(payload[i : i + (1 << 20)])
    with store.open_read("a/big.bin") as f:
        assert f.read() == payload
    with pytest.raises(RuntimeError):
        with store.open_write("a/big.bin") as f:
            f.write(b"half")
            raise RuntimeError("the step failed")
    with store.open_read("a/big.bin") as f:
        assert f.read() == payload  # the old object stays
    with pytest.raises(RuntimeError):
        with store.open_write("a/new.bin") as f:
            f.write(b"x" * 100)
            raise RuntimeError("the step failed")
    assert store.stat("a/new.bin") is None


def test_stat_list_delete_and_uri(store):
    assert store.stat("nothing") is None
    for key in ("r/2.json", "r/1.json", "other/x"):
        with store.open_write(key) as f:
            f.write(key.encode())
    info = store.stat("r/1.json")
    assert info.size == len(b"r/1.json") and info.etag
    with store.open_write("r/1.json") as f:
        f.write(b"replaced")
    assert store.stat("r/1.json").etag != info.etag
    assert [i.key for i in store.list("r/")] == ["r/1.json", "r/2.json"]
    store.delete("r/1.json")
    store.delete("r/1.json")  # idempotent
    assert [i.key for i in store.list("r/")] == ["r/2.json"]
    assert store.uri("r/2.json") == f"s3://{store.bucket}/fg/r/2.json"
    with pytest.raises(FileNotFoundError):
        with store.open_read("r/1.json"):
            pass
    with pytest.raises(ValueError):
        store.stat("../escape")


def test_parquet_reads_back_with_seeks(store):
    table = pa.table({"n": list(range(100_000)), "s": [str(i) for i in range(100_000)]})
    with store.open_write("t.parquet") as f:
        pq.write_table(table, f, row_group_size=10_000)
    with store.open_read("t.parquet") as f:
        parquet = pq.ParquetFile(f)
        assert parquet.metadata.num_row_groups == 10
        assert parquet.read_row_group(7).column("n")[0].as_py() == 70_000


def test_a_gzip_report_streams_from_s3_whatever_its_name(store):
    raw = io.BytesIO()
    write_report(raw, date(2024, 1, 7), terms=2000, seed=1)
    with store.open_write("reports/2024-01-07.json") as f:  # gzip bytes under a .json name
        f.write(gzip.compress(raw.getvalue()))
    with store.open_read("reports/2024-01-07.json") as f:
        reader = ReportReader(f, "s3 report", expected_week=date(2024, 1, 7), chunk_bytes=64 << 10)
        rows = sum(batch.table.num_rows for batch in reader)
    assert reader.compressed
    assert rows == len(json.loads(raw.getvalue())["dataByDepartmentAndSearchTerm"])


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzip", "plain"])
def test_a_wrong_content_encoding_label_changes_nothing(store, s3_endpoint, gzipped):
    """Reports arrive labelled Content-Encoding: gzip whether or not they are: the store hands
    out the stored bytes, and the reader tells gzip from them."""
    import boto3

    raw = io.BytesIO()
    write_report(raw, date(2024, 1, 7), terms=500, seed=3)
    stored = gzip.compress(raw.getvalue()) if gzipped else raw.getvalue()
    client = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    client.put_object(Bucket=store.bucket, Key=f"{store.prefix}r/report.json.gz", Body=stored, ContentEncoding="gzip")
    with store.open_read("r/report.json.gz") as f:
        assert f.read() == stored
    assert store.read_head("r/report.json.gz", 100) == stored[:100]
    with store.open_read("r/report.json.gz") as f:
        reader = ReportReader(f, "labelled gzip", expected_week=date(2024, 1, 7))
        rows = sum(batch.table.num_rows for batch in reader)
    assert reader.compressed is gzipped
    assert rows == len(json.loads(raw.getvalue())["dataByDepartmentAndSearchTerm"])


class _CuttingProxy(socketserver.ThreadingTCPServer):
    """Forwards TCP to the S3 server; the first response over `cut_after` bytes is cut there."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int], cut_after: int):
        self.upstream = upstream
        self.cut_after = cut_after
        self.cuts = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Forward)


class _Forward(socketserver.BaseRequestHandler):
    def handle(self):
        server: _CuttingProxy = self.server
        upstream = socket.create_connection(server.upstream)
        done = threading.Event()

        def client_to_upstream():
            try:
                while data := self.request.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass
            finally:
                done.set()

        threading.Thread(target=client_to_upstream, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                with server.lock:
                    cut = server.cuts == 0 and sent + len(data) > server.cut_after
                    if cut:
                        server.cuts += 1
                if cut:
                    self.request.sendall(data[: server.cut_after - sent])
                    self.request.shutdown(socket.SHUT_RDWR)  # the connection drops mid-body
                    break
                self.request.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            upstream.close()
            self.request.close()


def test_a_read_cut_off_mid_stream_resumes_where_it_stopped(store, s3_endpoint):
    payload = bytes(range(251)) * 40_000  # 10 MB
    with store.open_write("big/report.bin") as f:
        f.write(payload)
    host, port = s3_endpoint.removeprefix("http://").split(":")
    proxy = _CuttingProxy((host, int(port)), cut_after=3_000_000)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        through_proxy = S3ObjectStore(
            bucket=store.bucket, prefix=store.prefix, endpoint_url=f"http://127.0.0.1:{proxy.server_address[1]}", **CREDENTIALS
        )
        with through_proxy.open_read("big/report.bin") as f:
            chunks = []
            while chunk := f.read(1 << 20):
                chunks.append(chunk)
        assert proxy.cuts == 1  # the stream really broke once
        assert b"".join(chunks) == payload  # and nothing was lost or read twice
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_read_head_fetches_only_the_first_bytes(store):
    with store.open_write("h/obj") as f:
        f.write(b"0123456789" * 1000)
    with store.open_write("h/empty") as f:
        pass
    assert store.read_head("h/obj", 12) == b"012345678901"
    assert store.read_head("h/obj", 1 << 20) == b"0123456789" * 1000
    assert store.read_head("h/empty", 100) == b""
    with pytest.raises(FileNotFoundError, match="h/none"):
        store.read_head("h/none", 10)


def test_a_read_never_splices_two_versions_of_a_replaced_object(store):
    with store.open_write("v/report.bin") as f:
        f.write(b"A" * 3_000_000)
    with store.open_read("v/report.bin") as f:
        assert f.read(10) == b"A" * 10
        with store.open_write("v/report.bin") as w:
            w.write(b"B" * 3_000_000)
        f.seek(2_000_000)  # the next bytes need a new request, which must ask for the old version
        with pytest.raises(OSError, match="replaced while it was being read"):
            f.read(10)
