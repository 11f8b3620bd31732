"""The object store on S3 (or anything that speaks its API, such as a local test server).

Reads stream: no download of the whole object, no temporary copy. A read that breaks off
mid-stream is reopened at the byte already reached, with backoff, the way smart-open does
it; and every reopening asks for the same ETag, so an object replaced mid-read fails the
read instead of splicing two versions. The reader is ours rather than smart-open's because
smart-open's copies each byte three to four times on the way (BytesIO, bytearray, bytes,
and the caller's buffer) and read at 0.39-0.84x plain boto3 (docs/PERFORMANCE.md); this
one reads straight into the caller's buffer. Writes are smart-open's multipart uploads,
completed when the block exits cleanly and aborted when it raises, so a reader sees the
old object or the whole new one.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import time
from collections.abc import Iterator
from typing import BinaryIO

from pydantic import PrivateAttr

from resources.object_store import ObjectInfo, ObjectStore


class S3ObjectStore(ObjectStore):
    """Objects under s3://<bucket>/<prefix>. Every setting can come from dg.EnvVar."""

    bucket: str
    prefix: str = ""  # prepended to every key, e.g. "floodgate/"
    endpoint_url: str | None = None  # for S3-compatible servers; None is AWS
    region_name: str | None = None
    aws_access_key_id: str | None = None  # None: boto3's usual chain (role, profile, env)
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None  # with temporary credentials
    part_size_mb: int = 16  # multipart upload part size (S3's minimum is 5)
    # waits before each reopening of a read that broke off (then the read fails)
    retry_seconds: builtins.list[float] = [1, 2, 4, 8, 16]  # (`list` is a method here)

    _client_cache: object = PrivateAttr(default=None)

    def _client(self):
        if self._client_cache is None:
            import boto3
            from botocore.config import Config

            self._client_cache = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region_name,
                aws_access_key_id=self.aws_access_key_id,
                aws_secret_access_key=self.aws_secret_access_key,
                aws_session_token=self.aws_session_token,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}),
            )
        return self._client_cache

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"object key {key!r} is not a plain relative key")
        return f"{self.prefix}{key}"

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        info = self.stat(key)
        if info is None:
            raise FileNotFoundError(f"no object {self.uri(key)}")
        # gzip is told from the bytes by the readers, never by the name or Content-Encoding
        raw = _ResumingReader(self._client(), self.bucket, self._key(key), info, self.uri(key), self.retry_seconds)
        with io.BufferedReader(raw, 1 << 20) as f:
            yield f

    def read_head(self, key: str, size: int) -> bytes:
        from botocore.exceptions import ClientError

        if size <= 0:
            return b""
        try:  # one ranged GET: S3 sends only these bytes
            response = self._client().get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes=0-{size - 1}")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"no object {self.uri(key)}") from None
            if code == "InvalidRange":  # an empty object
                return b""
            raise
        with contextlib.closing(response["Body"]) as body:
            return body.read()

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        import smart_open

        # smart-open aborts the multipart upload when the block raises: nothing is published
        with smart_open.open(
            f"s3://{self.bucket}/{self._key(key)}",
            "wb",
            compression="disable",
            transport_params={"client": self._client(), "min_part_size": self.part_size_mb << 20},
        ) as f:
            yield f

    def stat(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            head = self._client().head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(key, head["ContentLength"], head["ETag"].strip('"'), head["LastModified"])

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                yield ObjectInfo(key, item["Size"], item["ETag"].strip('"'), item["LastModified"])

    def delete(self, key: str) -> None:
        self._client().delete_object(Bucket=self.bucket, Key=self._key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


@functools.cache
def _transient_errors() -> tuple[type[BaseException], ...]:
    """What breaks a stream without saying anything about the object: worth a reopening."""
    import botocore.exceptions
    import urllib3.exceptions

    return (ConnectionError, urllib3.exceptions.HTTPError, botocore.exceptions.BotoCoreError)


class _ResumingReader(io.RawIOBase):
    """The object's bytes from ranged GETs, resumed at the byte reached when a stream breaks."""

    def __init__(self, client, bucket: str, key: str, info: ObjectInfo, uri: str, retry_seconds: list[float]):
        self._client, self._bucket, self._key, self._uri = client, bucket, key, uri
        self._size, self._etag, self._retry_seconds = info.size, info.etag, retry_seconds
        self._position = 0
        self._body = None
        self.name = uri

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        position = max(0, base + offset)
        if position != self._position:
            self._drop_body()  # the next read opens a range from the new position
            self._position = position
        return position

    def readinto(self, buffer) -> int:
        if self._position >= self._size or not len(buffer):
            return 0
        for wait in (*self._retry_seconds, None):
            try:
                if self._body is None:
                    self._body = self._open()
                n = self._body.readinto(buffer)
                if n == 0:  # the server closed the stream before the object's end
                    raise ConnectionResetError(f"{self._uri}: the stream ended at byte {self._position}")
                self._position += n
                return n
            except _transient_errors():
                self._drop_body()
                if wait is None:
                    raise
                time.sleep(wait)  # backoff before reopening at the byte reached
        raise AssertionError("unreachable")

    def _open(self):
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={self._position}-", IfMatch=self._etag
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise OSError(f"{self._uri} was replaced while it was being read (at byte {self._position})") from None
            raise
        return response["Body"]

    def _drop_body(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()
