"""Where files live: a local directory by default, S3 in production.

Assets see only ``ObjectStore``. Keys are '/'-separated paths such as
``search_terms/2024-01-07/parsed.parquet``. Writes are atomic per object: a reader sees the
old object or the whole new one, and a write that raises leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import dagster as dg


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # changes whenever the content is replaced
    last_modified: datetime


class ObjectStore(dg.ConfigurableResource):
    """A flat namespace of binary objects."""

    @abstractmethod
    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A streaming reader of the object's bytes."""

    @abstractmethod
    def open_write(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A writer that publishes the object when the block exits cleanly, and nothing if it raises."""

    @abstractmethod
    def read_head(self, key: str, size: int) -> bytes:
        """The object's first `size` bytes (fewer if it is shorter), without reading the rest."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and version of the object, or None if there is none."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with prefix, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object if it exists."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where a person finds the object (a path or an s3:// URL)."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None


@functools.lru_cache(maxsize=64)
def _resolved_root(root: str) -> str:
    return str(Path(root).resolve())


class LocalDirectoryObjectStore(ObjectStore):
    """Objects as files under a directory; needs nothing started."""

    root: str

    def _path(self, key: str) -> Path:
        # lexical, not Path.resolve(): resolving stats every component of every key, which
        # cost the books pipeline's many small reads more than reading them did
        root = _resolved_root(self.root)
        path = os.path.normpath(os.path.join(root, key))
        if path != root and not path.startswith(root + os.sep):
            raise ValueError(f"object key {key!r} escapes the store root {root}")
        return Path(path)

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no object {key!r} in {self.root}")
        with open(path, "rb", buffering=0) as f:
            yield f

    def read_head(self, key: str, size: int) -> bytes:
        with self.open_read(key) as f:
            return f.read(size)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None  # a directory is a prefix, not an object
        # Every write is a new file renamed into place, so the inode changes with the
        # content even when the size and modification time do not (cp -p, coarse clocks).
        etag = f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}"
        return ObjectInfo(key, st.st_size, etag, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        root = Path(self.root).resolve()
        base = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else root
        if not base.is_dir():
            return
        keys = sorted(
            p.relative_to(root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".partial")
        )
        for key in keys:
            if key.startswith(prefix):
                info = self.stat(key)
                if info is not None:
                    yield info

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def uri(self, key: str) -> str:
        return str(self._path(key))
