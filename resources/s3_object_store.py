"""The object store on S3 (or anything that speaks its API, such as a local test server).

Reads stream through smart-open: no download of the whole object, and a read that breaks
off mid-stream is reopened at the byte already reached (smart-open retries with backoff
on connection resets and botocore/urllib3 errors). Writes are multipart uploads that are
completed when the block exits cleanly and aborted when it raises, so a reader sees the
old object or the whole new one.
"""

from __future__ import annotations

import contextlib
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
    part_size_mb: int = 16  # multipart upload part size (S3's minimum is 5)

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
                config=Config(retries={"max_attempts": 5, "mode": "standard"}),
            )
        return self._client_cache

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"object key {key!r} is not a plain relative key")
        return f"{self.prefix}{key}"

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        import smart_open

        if self.stat(key) is None:
            raise FileNotFoundError(f"no object {self.uri(key)}")
        with smart_open.open(
            f"s3://{self.bucket}/{self._key(key)}",
            "rb",
            compression="disable",  # gzip is told from the bytes by the readers, not by the name
            transport_params={"client": self._client(), "buffer_size": 1 << 20},
        ) as f:
            yield f

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
