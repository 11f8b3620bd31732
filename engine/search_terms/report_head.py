"""A report's specification from its first bytes, for callers that must not read the whole
object (the S3 sensor looks at every new object under the reports prefix)."""

from __future__ import annotations

import io
from collections.abc import Callable

from engine.search_terms.report_reader import ReportError, ReportReader, ReportSpec

FIRST_BYTES = 64 << 10  # the specification leads Amazon's documents: a few hundred bytes in
MAX_BYTES = 1 << 20  # a document whose spec is not in its first MiB is read by the run instead


class _Head(io.RawIOBase):
    """The first bytes of an object, remembering whether a reader asked for more: a
    ReportError after that is the cut, not the report's fault."""

    def __init__(self, head: bytes):
        self._head, self._at, self.ran_out = head, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._at >= len(self._head):
            self.ran_out = True
            return 0
        n = min(len(buffer), len(self._head) - self._at)
        buffer[:n] = self._head[self._at : self._at + n]
        self._at += n
        return n


def spec_from_head(
    read_head: Callable[[int], bytes], name: str, size: int, first: int = FIRST_BYTES, limit: int = MAX_BYTES
) -> ReportSpec | None:
    """The report's specification, reading at most `limit` of its `size` bytes.

    None when the document's data comes before its specification, or when the
    specification is not within `limit` bytes. ReportError when the bytes read are not a
    Search Terms report (not JSON, another report type or period, gzip that is corrupt)."""
    want = min(first, size)
    while True:
        head = _Head(read_head(want))
        try:
            return ReportReader(head, name).peek_spec()
        except ReportError:
            if not head.ran_out or want >= size:
                raise  # the bytes read are wrong, or they are the whole object
            if want >= limit:
                return None
            want = min(want * 4, limit, size)


__all__ = ["ReportError", "spec_from_head"]
