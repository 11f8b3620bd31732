"""An S3 API on a loopback port: moto's server, which boto3 and smart-open reach over HTTP."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

# Credentials the local server accepts (it checks none); real ones never appear in tests.
TEST_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """Run a moto S3 server on a free loopback port for the block; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def s3_server_process(start_timeout: float = 30.0) -> Iterator[str]:
    """The same server in a process of its own, so that it does not share the caller's GIL
    (benchmarks: the client's cost is what they compare)."""
    with socket.socket() as probe:  # a free port; the server binds it a moment later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the S3 server on port {port} did not start") from None
                time.sleep(0.05)  # polling for the listening socket
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def create_bucket(endpoint_url: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint_url, **TEST_CREDENTIALS).create_bucket(Bucket=bucket)
