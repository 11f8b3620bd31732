"""An uploaded file's bytes as a stream of UTF-8: format, compression, encoding, delimiter.

Format comes from the first bytes, not the name: gzip (1f 8b) is decompressed on the fly,
a zip archive is read as .xlsx, the old binary .xls is refused with a clear message.

Encoding, unless declared: a UTF-8 BOM means UTF-8 (the BOM is dropped), a UTF-16 BOM
means UTF-16. Otherwise the decision waits for the first byte that is not ASCII (ASCII
reads the same in every candidate): if the bytes around it are valid UTF-8 the file is
UTF-8, else Windows-1252. Windows-1252 is read as browsers read it: the five bytes it
leaves undefined (81 8D 8F 90 9D) become the Latin-1 characters of the same number, so a
Latin-1 file decodes to the same text (Latin-1's other C1 controls, 80–9F, never appear in
a text file). Declare `latin-1` to read 80–9F as C1 controls. A file that began as valid
UTF-8 and later has a byte that is not fails with its byte offset: it mixes encodings.

Every byte is checked or converted on the way through, so what leaves this module is
valid UTF-8 whatever the source.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
OLE2_MAGIC = b"\xd0\xcf\x11\xe0"  # .xls (Excel 97-2003)
UTF8_BOM = codecs.BOM_UTF8
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

CSV, CSV_GZIP, XLSX = "csv", "csv.gz", "xlsx"
DELIMITERS = (",", ";", "\t")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
_CHUNK = 1 << 20
_UNDEFINED_IN_CP1252 = {0x81, 0x8D, 0x8F, 0x90, 0x9D}
_NOT_ASCII = re.compile(rb"[\x80-\xff]")


class UploadFormatError(ValueError):
    """The file is not something the catalog can read; the message names file and problem."""


def _cp1252_gaps(error: UnicodeDecodeError):
    """Decode the bytes Windows-1252 leaves undefined as Latin-1 does (WHATWG's windows-1252)."""
    bad = error.object[error.start : error.end]
    if all(b in _UNDEFINED_IN_CP1252 for b in bad):
        return bad.decode("latin-1"), error.end
    raise error


codecs.register_error("floodgate-cp1252", _cp1252_gaps)


def detect_format(head: bytes, name: str) -> str:
    """csv, csv.gz or xlsx, from the first bytes; UploadFormatError for what cannot be read."""
    if head.startswith(GZIP_MAGIC):
        return CSV_GZIP
    if head.startswith(ZIP_MAGIC):
        return XLSX
    if head.startswith(OLE2_MAGIC):
        raise UploadFormatError(f"{name}: an Excel 97-2003 .xls file; save it as .xlsx or CSV")
    return CSV


def canonical_encoding(declared: str | None) -> str | None:
    """The codec's canonical name, or None for auto-detection; ValueError for an unknown one."""
    if declared is None or declared.strip().lower() in ("", "auto"):
        return None
    try:
        name = codecs.lookup(declared.strip()).name
    except LookupError:
        raise UploadFormatError(f"unknown encoding {declared!r}") from None
    return "windows-1252" if name == "cp1252" else name


class CountingReader(io.RawIOBase):
    """Counts the bytes read from the object (compressed bytes, for a gzip upload)."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:
        # the source's bytes as they come: RawIOBase.read would read into a buffer of its own
        # and copy that twice more
        data = self.raw.read(size)
        self.count += len(data)
        return data


class Utf8Stream(io.RawIOBase):
    """The object's text as UTF-8 bytes, decided and checked as the module doc says.

    `raw` is the object's byte stream (gzip already detected by the caller: pass
    gzipped=True). `encoding` is the decision so far: None while only ASCII was seen.
    """

    def __init__(self, raw: BinaryIO, name: str, *, declared: str | None = None, gzipped: bool = False):
        self.name = name
        self.counter = CountingReader(raw)
        self._source: BinaryIO = self.counter
        if gzipped:
            self._source = gzip.GzipFile(fileobj=self.counter, mode="rb")
        self.declared = canonical_encoding(declared)
        self.encoding: str | None = None
        self.bom = False
        self._decoder = None  # an incremental decoder once the encoding needs converting or checking
        self._convert = False  # True: decode then encode as UTF-8; False: decode only to check
        self._offset = 0  # bytes of decoded text consumed from the source (after gzip)
        self._out = b""  # converted bytes not handed out yet, from self._pos on
        self._pos = 0
        self._eof = False
        self._started = False
        # whether a NUL byte has been read: a batch is made of bytes read before it, so a
        # batch made while this is False has no NUL in any cell (and is not searched for one)
        self.saw_nul = False

    # -- io.RawIOBase ----------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        piece = self.read_buffer(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)

    def read_buffer(self, size: int) -> memoryview:
        """Up to `size` bytes of the text, as a view of the converted chunk they are in: no
        copy. pyarrow's readers call this, where a file object has it, instead of `read`
        (which RawIOBase serves with two copies of every byte: parsing the 66 MB bench file
        took 0.18-0.20 s through `read` and 0.12-0.14 s through this, docs/PERFORMANCE.md).
        A view stays valid after later reads: each chunk is a bytes object of its own."""
        while self._pos == len(self._out) and not self._eof:
            self._fill()
        n = min(size, len(self._out) - self._pos)
        piece = memoryview(self._out)[self._pos : self._pos + n]
        self._pos += n
        return piece

    def read_text_head(self, size: int = 256 * 1024) -> tuple[str, bool]:
        """Up to `size` bytes of text from the start, without consuming them (for sniffing),
        and whether that is the whole text."""
        while len(self._out) - self._pos < size and not self._eof:
            self._fill()
        head = self._out[self._pos : self._pos + size]
        whole = self._eof and len(self._out) - self._pos <= size
        return head.decode("utf-8", errors="ignore"), whole

    @property
    def bytes_read(self) -> int:
        """Bytes of the object read so far (before decompression)."""
        return self.counter.count

    @property
    def encoding_name(self) -> str:
        if self.encoding is None:
            return "ascii"
        return f"{self.encoding} (BOM)" if self.bom else self.encoding

    # -- decoding -------------------------------------------------------------------------------

    def _read_source(self) -> bytes:
        try:
            return self._source.read(_CHUNK)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise UploadFormatError(f"{self.name}: the gzip data is damaged near byte {self.bytes_read:,}: {exc}") from None

    def _fill(self) -> None:
        """Convert the next chunk of the source, after what is not handed out yet."""
        chunk = self._read_source()
        final = not chunk
        if not self._started:
            self._started = True
            chunk = self._start(chunk)
            final = not chunk
        if self.encoding is None and not final and not chunk.isascii():
            chunk, final = self._complete_first_character(chunk)
        if final:
            self._eof = True
        out = self._process(chunk, final)
        if not self.saw_nul and b"\x00" in out:
            self.saw_nul = True
        rest = self._out[self._pos :] if self._pos < len(self._out) else b""
        self._out, self._pos = (rest + out if rest else out), 0

    def _complete_first_character(self, chunk: bytes) -> tuple[bytes, bool]:
        """The chunk, extended to at least 4 bytes past its first byte that is not ASCII (or to
        the end of the text), and whether the text ends with it. The encoding is decided at
        that byte; cut off by the end of a read, a Latin-1 é (0xE9) looks like the start of a
        3-byte UTF-8 character, which an incremental decoder holds back instead of refusing."""
        first = _NOT_ASCII.search(chunk).start()
        while len(chunk) - first < 4:
            more = self._read_source()
            if not more:
                return chunk, True
            chunk += more
        return chunk, False

    def _start(self, chunk: bytes) -> bytes:
        """Look at the first bytes: BOMs, and a declared encoding."""
        while len(chunk) < 4:  # a BOM may straddle reads from a slow stream
            more = self._read_source()
            if not more:
                break
            chunk += more
        if chunk.startswith(UTF8_BOM):
            self.bom = True
            self._use("utf-8")
            self._offset = len(UTF8_BOM)
            return chunk[len(UTF8_BOM) :]
        if chunk.startswith(UTF16_BOMS) and self.declared in (None, "utf-16"):
            self.bom = True
            self._use("utf-16")  # the utf-16 decoder reads and drops the BOM itself
            return chunk
        if self.declared is not None:
            self._use(self.declared)
        return chunk

    def _use(self, encoding: str) -> None:
        self.encoding = encoding
        errors = "floodgate-cp1252" if encoding == "windows-1252" else "strict"
        codec = "cp1252" if encoding == "windows-1252" else encoding
        self._decoder = codecs.getincrementaldecoder(codec)(errors)
        self._convert = encoding not in ("utf-8", "ascii")

    def _process(self, chunk: bytes, final: bool) -> bytes:
        if self.encoding is None:
            if chunk.isascii():
                self._offset += len(chunk)
                return chunk
            # the first byte that is not ASCII decides: valid UTF-8 there, or Windows-1252
            try:
                codecs.getincrementaldecoder("utf-8")().decode(chunk, final)
                self._use("utf-8")
            except UnicodeDecodeError as exc:
                first = _NOT_ASCII.search(chunk).start()
                self._use("windows-1252" if exc.start == first else "utf-8")  # utf-8: fails below, named
        if self._convert:
            try:
                text = self._decoder.decode(chunk, final)
            except UnicodeDecodeError as exc:
                raise UploadFormatError(
                    f"{self.name}: byte {self._offset + exc.start:,} (0x{chunk[exc.start]:02x}) is not valid "
                    f"{self.encoding}; declare the file's encoding"
                ) from None
            self._offset += len(chunk)
            return text.encode("utf-8")
        if chunk.isascii() and not self._decoder.getstate()[0]:
            self._offset += len(chunk)
            return chunk
        try:
            self._decoder.decode(chunk, final)  # only to check; the bytes pass through as they are
        except UnicodeDecodeError as exc:
            raise UploadFormatError(
                f"{self.name}: byte {self._offset + exc.start:,} (0x{chunk[exc.start]:02x}) is not valid UTF-8, "
                "although the file's earlier text was: it mixes encodings; save it as UTF-8 or declare "
                "its encoding (latin-1, cp1252)"
            ) from None
        self._offset += len(chunk)
        return chunk


@dataclass(frozen=True)
class Dialect:
    delimiter: str
    sniffed: bool

    @property
    def name(self) -> str:
        return DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))


def sniff_delimiter(sample: str, complete: bool) -> str:
    """The candidate delimiter (comma, semicolon, tab) that splits the sample's records most
    consistently into the most fields. `complete`: the sample is the whole file (else its
    last record may be cut off and is not looked at)."""
    best, best_score = ",", (-1.0, 0)
    for delimiter in DELIMITERS:
        try:
            records = list(_first_records(sample, delimiter, 50))
        except csv.Error:
            continue
        if records and not complete:
            records = records[:-1] or records
        records = [r for r in records if r]  # blank lines say nothing
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        consistent = sum(len(r) == width for r in records) / len(records)
        score = (consistent, width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _first_records(sample: str, delimiter: str, limit: int):
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    for i, record in enumerate(reader):
        if i == limit:
            return
        yield record
