"""An S3 API on a loopback port: moto's server, which boto3 and smart-open reach over HTTP."""

from __future__ import annotations

import contextlib
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


def create_bucket(endpoint_url: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint_url, **TEST_CREDENTIALS).create_bucket(Bucket=bucket)
