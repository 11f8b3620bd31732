"""An .xlsx upload as batches of raw string columns, in bounded memory and at C speed.

The sheet's XML is decompressed in pieces of about 1 MB, each ending after a whole row, and
each piece is taken apart column-wise with Arrow string kernels: split at every `</c>`,
then at the cell's `<c ` and its first `>`, giving each cell's attributes and content as
arrays; rows are told apart by counting `<row` tags. Nothing holds the whole sheet. The
shared-strings table (Excel keeps every distinct text of the workbook there, and a cell
refers to it by index) goes to a scratch file as it is read, and comes back a chunk at a
time when cells refer to it (`_SharedStrings`).

Measured on 500k rows × 7 columns (docs/PERFORMANCE.md): python-calamine reads the whole
sheet into memory first (337 MB); openpyxl's read-only mode took 88 s; expat with Python
handlers 15–40 s; this reader, in the whole import into PostgreSQL without Dagster, 13 s
and a 183 MB peak (bench.catalog's (d), of which 114 MB is pyarrow and psycopg loaded).

Cells become the text a person sees in Excel, as far as the catalog needs it: numbers as
written, or in their shortest form at Excel's 15 significant digits when the file carries
binary noise (7566.8900000000003 → 7566.89); booleans as true/false; numbers in a date
format as ISO dates; errors (#N/A) as written. The first sheet is read unless one is
named; the header is its first row with a value. Pieces that do not fit the fast path
(cells without a reference, rich text) are read with regular expressions instead.
"""

from __future__ import annotations

import html
import os
import posixpath
import re
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import BinaryIO
from xml.parsers import expat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.catalog.raw_rows import RawBatch
from engine.catalog.text_stream import UploadFormatError

_PIECE = 1 << 20  # bytes of XML per piece: about 4k rows of 7 cells (2 MB: 25 MiB more at the peak, 10% faster)
_DATE_FORMAT_IDS = set(range(14, 23)) | {45, 46, 47}
_QUOTED_OR_BRACKETED = re.compile(r'"[^"]*"|\[[^\]]*\]|\\.')
_EPOCH_1900 = datetime(1899, 12, 30)
_EPOCH_1904 = datetime(1904, 1, 1)


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def _column_index(letters: str) -> int:
    index = 0
    for ch in letters:
        index = index * 26 + (ord(ch) - 64)
    return index - 1


class XlsxSource:
    def __init__(self, stream: BinaryIO, name: str, *, sheet: str | None = None):
        self.name = name
        self._stream = stream
        try:
            self._zip = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UploadFormatError(f"{name}: not a readable .xlsx file ({exc})") from None
        self.sheet_name, self._sheet_path, self._strings_path, self._date1904 = self._workbook(sheet)
        self._date_styles = self._styles()
        self.header: list[str] = []
        self.header_row = 0

    # -- workbook parts ---------------------------------------------------------------------------

    def _xml(self, path: str, start, end=None, text=None) -> None:
        parser = expat.ParserCreate()
        parser.buffer_text = True
        parser.StartElementHandler = start
        if end:
            parser.EndElementHandler = end
        if text:
            parser.CharacterDataHandler = text
        try:
            with self._zip.open(path) as member:
                while piece := member.read(_PIECE):
                    parser.Parse(piece, False)
                parser.Parse(b"", True)
        except KeyError:
            raise UploadFormatError(f"{self.name}: not an .xlsx workbook (no {path})") from None
        except (expat.ExpatError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise UploadFormatError(f"{self.name}: {path} is damaged: {exc}") from None

    def _workbook(self, wanted: str | None) -> tuple[str, str, str | None, bool]:
        sheets: list[tuple[str, str]] = []
        flags = {"date1904": False}

        def on_workbook(tag, attrs):
            tag = _local(tag)
            if tag == "sheet":
                rid = next((v for k, v in attrs.items() if _local(k) == "id" and k != "sheetId"), None)
                sheets.append((attrs.get("name", ""), rid))
            elif tag == "workbookPr":
                flags["date1904"] = attrs.get("date1904") in ("1", "true")

        self._xml("xl/workbook.xml", on_workbook)
        targets: dict[str, tuple[str, str]] = {}

        def on_rels(tag, attrs):
            if _local(tag) == "Relationship":
                targets[attrs.get("Id")] = (attrs.get("Type", ""), attrs.get("Target", ""))

        self._xml("xl/_rels/workbook.xml.rels", on_rels)

        def resolve(target: str) -> str:
            return target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))

        if not sheets:
            raise UploadFormatError(f"{self.name}: the workbook has no worksheet")
        if wanted is None:
            name, rid = sheets[0]
        else:
            found = [s for s in sheets if s[0] == wanted]
            if not found:
                names = ", ".join(repr(s[0]) for s in sheets)
                raise UploadFormatError(f"{self.name}: no worksheet named {wanted!r} (it has {names})")
            name, rid = found[0]
        if rid not in targets:
            raise UploadFormatError(f"{self.name}: worksheet {name!r} has no part in the workbook")
        strings = next((resolve(t) for kind, t in targets.values() if kind.endswith("/sharedStrings")), None)
        return name, resolve(targets[rid][1]), strings, flags["date1904"]

    def _styles(self) -> set[int]:
        """Indices of the cell styles whose number format shows a date or time."""
        if "xl/styles.xml" not in self._zip.namelist():
            return set()
        custom: dict[int, str] = {}
        formats: list[int] = []
        state = {"in_xfs": False}

        def start(tag, attrs):
            tag = _local(tag)
            if tag == "numFmt":
                custom[int(attrs.get("numFmtId", "0"))] = attrs.get("formatCode", "")
            elif tag == "cellXfs":
                state["in_xfs"] = True
            elif tag == "xf" and state["in_xfs"]:
                formats.append(int(attrs.get("numFmtId", "0")))

        def end(tag):
            if _local(tag) == "cellXfs":
                state["in_xfs"] = False

        self._xml("xl/styles.xml", start, end)

        def is_date(fmt: int) -> bool:
            if fmt in _DATE_FORMAT_IDS:
                return True
            code = _QUOTED_OR_BRACKETED.sub("", custom.get(fmt, "")).lower()
            return any(ch in code for ch in "dmyhs") and "general" not in code

        return {i for i, fmt in enumerate(formats) if is_date(fmt)}

    def _shared_strings(self) -> "_SharedStrings":
        """The workbook's shared texts, in index order."""
        if self._strings_path is None or self._strings_path not in self._zip.namelist():
            return _SharedStrings()
        return _SharedStrings(self._shared_string_chunks())

    def _shared_string_chunks(self) -> Iterator[pa.Array]:
        """The shared texts, a chunk per piece of the part read (each packed as it comes)."""
        prefix, pieces = self._pieces(self._strings_path, "si", "the shared strings")
        for piece in pieces:
            items = pc.split_pattern(self._text_array(piece, "the shared strings"), f"</{prefix}si>").flatten()
            items = items.slice(0, len(items) - 1)  # what follows the last </si>
            simple = pc.extract_regex(items, rf"<{prefix}si>\s*<{prefix}t(?:\s[^>]*)?>(?P<t>[^<]*)</{prefix}t>\s*$")
            texts = simple.flatten()[0]
            if texts.null_count or f"<{prefix}si/>".encode() in piece:
                texts = pa.array(_shared_texts_slowly(piece.decode()), pa.string())  # rich text, empty items
            yield _unescape_where_needed(texts)

    # -- the sheet ------------------------------------------------------------------------------

    def batches(self) -> Iterator[RawBatch]:
        with self._shared_strings() as strings:
            yield from self._sheet_batches(strings)

    def _sheet_batches(self, strings: "_SharedStrings") -> Iterator[RawBatch]:
        self._converter = _CellConverter(strings, self._date_styles, _EPOCH_1904 if self._date1904 else _EPOCH_1900)
        prefix, pieces = self._pieces(self._sheet_path, "row", f"worksheet {self.sheet_name!r}")
        rows_so_far = 0  # <row> tags before the piece
        last_number = 0  # the number of the last row seen
        for piece in pieces:
            text = self._text_array(piece, f"worksheet {self.sheet_name!r}")
            cells = _split_cells(text, prefix, rows_so_far, last_number)
            if cells is None:
                cells = _match_cells(piece.decode(), prefix, rows_so_far, last_number)
            rows_so_far, last_number = cells.rows_after, cells.last_number
            if not len(cells.content):
                continue
            try:
                values = self._converter.values(cells)
            except (IndexError, ValueError, pa.ArrowException) as exc:
                raise UploadFormatError(
                    f"{self.name}: worksheet {self.sheet_name!r}, rows {int(cells.number[0])}–{int(cells.number[-1])}: "
                    f"a cell cannot be read ({exc})"
                ) from None
            batch = self._rows(cells, values)
            if batch is not None:
                yield batch
        if not self.header:
            raise UploadFormatError(f"{self.name}: worksheet {self.sheet_name!r} is empty (no header row)")

    def _rows(self, cells: "_Cells", values: pa.Array) -> RawBatch | None:
        """The piece's cells (row, column, text) pivoted into one column per header cell."""
        ordinal, number, col = cells.ordinal, cells.number, cells.col
        present = np.asarray(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0).to_numpy(zero_copy_only=False))
        if not self.header:
            if not present.any():
                return None
            first = ordinal[np.argmax(present)]
            in_header = ordinal == first
            header_cols = col[in_header]
            header = [""] * (int(header_cols.max()) + 1)
            for c, v in zip(header_cols.tolist(), values.filter(pa.array(in_header)).to_pylist()):
                header[c] = v
            self.header, self.header_row = header, int(number[in_header][0])
            after = ordinal > first
            ordinal, number, col, present = ordinal[after], number[after], col[after], present[after]
            values = values.filter(pa.array(after))
            if not len(ordinal):
                return None
        width = len(self.header)
        ragged: list[tuple[int, list[str]]] = []
        outside = col >= width
        if outside.any():
            wide = np.unique(ordinal[outside & present])  # rows with a value right of the header
            if len(wide):
                in_wide = np.isin(ordinal, wide)
                for row in wide.tolist():
                    mine = ordinal == row
                    found = [""] * (int(col[mine].max()) + 1)
                    for c, v in zip(col[mine].tolist(), values.filter(pa.array(mine)).to_pylist()):
                        found[c] = v
                    ragged.append((int(number[mine][0]), found))
            else:
                in_wide = np.zeros(len(ordinal), bool)
            keep = ~outside & ~in_wide
            ordinal, number, col = ordinal[keep], number[keep], col[keep]
            values = values.filter(pa.array(keep))
        # one output row per row that has cells; rows with only empty cells are blank rows
        starts = np.flatnonzero(np.r_[True, ordinal[1:] != ordinal[:-1]]) if len(ordinal) else np.array([], np.int64)
        position = np.cumsum(np.r_[0, (ordinal[1:] != ordinal[:-1]).astype(np.int64)]) if len(ordinal) else ordinal
        rows = len(starts)
        padded = pa.concat_arrays([values.cast(pa.string()), pa.array([""], pa.string())])
        columns = []
        for j in range(width):
            mine = np.flatnonzero(col == j)
            index = np.full(rows, len(values), np.int64)
            index[position[mine]] = mine
            columns.append(padded.take(pa.array(index)))
        return RawBatch(pa.array(number[starts], pa.int64()), columns, ragged, self._stream_position())

    def _pieces(self, path: str, element: str, what: str) -> tuple[str, Iterator[bytes]]:
        """The part's namespace prefix ("" or "x:"), and its XML (UTF-8) in pieces of about
        _PIECE bytes, each ending after an </element>. Bytes, not str: Arrow takes them
        without a copy, where a 4 MB str cost 40 MB on its way into an array."""
        try:
            member = self._zip.open(path)
        except KeyError:
            raise UploadFormatError(f"{self.name}: {what} is missing from the file") from None
        first = member.peek(64 * 1024)[: 64 * 1024].decode("utf-8", errors="ignore")
        root = re.search(r"<(\w+:)?[A-Za-z]+\b[^>?!]*>", first)
        prefix = (root.group(1) or "") if root else ""
        return prefix, self._read_pieces(member, f"</{prefix}{element}>", what)

    def _read_pieces(self, member, end_tag: str, what: str) -> Iterator[bytes]:
        end = end_tag.encode()
        rest = b""
        try:
            with member:
                while True:
                    data = member.read(_PIECE)
                    if not data:
                        if rest:
                            yield rest
                        return
                    data = rest + data if rest else data
                    cut = data.rfind(end)  # '<' never appears in XML text, so this is a real end tag
                    if cut < 0:
                        rest = data
                        continue
                    cut += len(end)
                    yield data[:cut]
                    rest = data[cut:]
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise UploadFormatError(f"{self.name}: {what} is damaged: {exc}") from None

    def _text_array(self, piece: bytes, what: str) -> pa.Array:
        """The piece as a one-element Arrow string array, sharing its memory."""
        offsets = pa.py_buffer(np.array([0, len(piece)], np.int32).tobytes())
        array = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(piece)])
        try:
            array.validate(full=True)  # UTF-8
        except pa.ArrowInvalid:
            raise UploadFormatError(f"{self.name}: {what} is not valid UTF-8 XML") from None
        return array

    def _stream_position(self) -> int:
        try:
            return self._stream.tell()
        except (OSError, AttributeError, ValueError):
            return 0


# -- taking a piece apart ------------------------------------------------------------------------


class _Cells:
    """The cells of one piece that have content, in document order."""

    def __init__(self, ordinal, number, letters, kind, style, content, rows_after, last_number):
        self.ordinal = ordinal  # np.int64: which <row> of the sheet (counting every row tag)
        self.number = number  # np.int64: the row's number (its r attribute, or counted)
        self.letters = letters  # pa string: the column's letters
        self.kind = kind  # pa string or null: the t attribute
        self.style = style  # pa string or null: the s attribute
        self.content = content  # pa string: what is between <c ...> and </c>
        self.rows_after, self.last_number = rows_after, last_number
        self.col = _column_numbers(letters)


def _column_numbers(letters: pa.Array) -> np.ndarray:
    encoded = letters.dictionary_encode()
    lookup = np.array([_column_index(x) for x in encoded.dictionary.to_pylist()] or [0], np.int64)
    return lookup[encoded.indices.to_numpy(zero_copy_only=False)]


def _row_numbers(refs: list, counts: np.ndarray, last_number: int) -> np.ndarray:
    """Numbers of the rows whose cells a piece's segments hold: the r attribute of the last
    row tag in the segment, or, without one, the count of row tags so far."""
    if None not in refs:
        return np.array(refs, np.int64)
    numbers = np.empty(len(refs), np.int64)
    for i, (ref, count) in enumerate(zip(refs, counts.tolist())):
        last_number = int(ref) if ref is not None else last_number + count
        numbers[i] = last_number
    return numbers


def _split_cells(piece: pa.Array, prefix: str, rows_before: int, last_number: int) -> _Cells | None:
    """The fast path: Arrow string kernels over the whole piece. None when a cell has no
    reference (its column would depend on the cells before it)."""
    if pc.any(pc.match_substring(piece, f"<{prefix}c>")).as_py():
        piece = pc.replace_substring(piece, f"<{prefix}c>", f"<{prefix}c >")
    segments = pc.split_pattern(piece, f"</{prefix}c>").flatten()
    tail = segments[len(segments) - 1].as_py()
    segments = segments.slice(0, len(segments) - 1)  # each ends where a cell ends
    row_tag = f"<{prefix}row"
    starts = pc.count_substring(segments, row_tag).to_numpy(zero_copy_only=False).astype(np.int64)
    ordinal = rows_before + np.cumsum(starts)
    # the number of the row that starts last in each segment that starts one
    started = np.flatnonzero(starts)
    last_row_tag = pc.list_element(pc.split_pattern(segments.take(pa.array(started)), row_tag, max_splits=1, reverse=True), 1)
    refs = pc.extract_regex(last_row_tag, r'^[^>]*?\br="(?P<r>\d+)"').flatten()[0]
    refs = refs.to_pylist() if refs.null_count else pc.cast(refs, pa.int64()).to_numpy().tolist()
    row_number = _row_numbers(refs, starts[started], last_number)
    numbers = np.repeat(row_number, np.diff(np.r_[started, len(segments)])) if len(started) else np.array([], np.int64)
    if len(started) and started[0] != 0 or (len(segments) and not len(started)):
        return None  # the piece begins inside a row: cannot happen with pieces cut after </row>
    parts = pc.split_pattern(segments, f"<{prefix}c ", max_splits=1, reverse=True)
    if len(parts) and pc.min(pc.list_value_length(parts)).as_py() != 2:
        return None
    cell = pc.list_element(parts, 1)
    attributes_and_content = pc.split_pattern(cell, ">", max_splits=1)
    attributes = pc.list_element(attributes_and_content, 0)
    content = pc.list_element(attributes_and_content, 1)
    letters = pc.extract_regex(attributes, r'(?:^|\s)r="(?P<c>[A-Z]+)\d*"').flatten()[0]
    if letters.null_count:
        return None
    kind = pc.extract_regex(attributes, r'(?:^|\s)t="(?P<t>\w+)"').flatten()[0]
    style = pc.extract_regex(attributes, r'(?:^|\s)s="(?P<s>\d+)"').flatten()[0]
    # a self-closing <c .../> leaves a "/" at the end of the attributes and no content
    has_content = pc.and_(pc.greater(pc.utf8_length(content), 0), pc.invert(pc.ends_with(attributes, "/")))
    rows_after = rows_before + int(starts.sum()) + tail.count(row_tag)
    last = int(row_number[-1]) if len(row_number) else last_number
    last += tail.count(row_tag)  # empty rows after the last cell (only their count matters)
    if pc.all(has_content).as_py() is False:
        keep = has_content
        mask = keep.to_numpy(zero_copy_only=False)
        return _Cells(
            ordinal[mask], numbers[mask], letters.filter(keep), kind.filter(keep), style.filter(keep),
            content.filter(keep), rows_after, last,
        )
    return _Cells(ordinal, numbers, letters, kind, style, content, rows_after, last)


def _match_cells(piece: str, prefix: str, rows_before: int, last_number: int) -> _Cells:
    """The careful path: one regular expression over the piece, cell by cell in Python."""
    ordinals, numbers, letters_, kinds, styles, contents = [], [], [], [], [], []
    ordinal, number, col = rows_before, last_number, -1
    for row_tag, row_ref, letters, style, kind, other, content in _SHEET_ITEMS.findall(piece):
        if row_tag:
            ordinal += 1
            number = int(row_ref) if row_ref else number + 1
            col = -1
            continue
        if other and (not letters or not kind and " t=" in other or not style and " s=" in other):
            letters, style, kind = _attributes(other, letters, style, kind)
        col = _column_index(letters) if letters else col + 1
        if not content:
            continue
        ordinals.append(ordinal)
        numbers.append(number)
        letters_.append(column_letters(col))
        kinds.append(kind or None)
        styles.append(style or None)
        contents.append(content)
    return _Cells(
        np.array(ordinals, np.int64), np.array(numbers, np.int64), pa.array(letters_, pa.string()),
        pa.array(kinds, pa.string()), pa.array(styles, pa.string()), pa.array(contents, pa.string()), ordinal, number,
    )


def column_letters(index: int) -> str:
    """A spreadsheet column's letters from its 0-based index: 0 → A, 26 → AA."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


class _SharedStrings:
    """The shared-strings table, in a scratch file (Arrow IPC, under TMPDIR) as the chunks
    it was read in. Close it (or use it as a context manager) to remove the file.

    A workbook of 500k product rows has a million distinct texts, 44 MiB of them: held
    plain, they alone put an upload's import over its memory budget, and packed with zstd
    (to about a quarter, as this table was until it moved to a file) they still grew with
    the workbook: 11 MiB of the import's peak for 500k rows. Each chunk (about 18k texts) is
    written as it is read and read back when a batch of cells refers to it, the last two
    kept. Read, not memory-mapped (mapped pages count as resident), and neither
    compressed nor expanded: a chunk is a read of under 1 MB, from the page cache.
    (ChunkedArray.take concatenates the chunks on every call: takes are split by chunk.)"""

    # chunks kept in memory. The bench workbook's batches each refer to about 16 of its 57
    # chunks (names repeat across the whole sheet), so the chunks are read again whether 2 or
    # 4 are kept (1990 and 1976 reads for 500k rows, at the same speed), and 2 hold 4 MB less
    # at the peak (engine alone, 4 alternations: 147-150 MB against 152-154 MB)
    _KEPT = 2
    _SCHEMA = pa.schema([("text", pa.string())])

    def __init__(self, chunks: Iterable[pa.Array] = ()):
        self._folder: tempfile.TemporaryDirectory | None = None
        self._source: pa.NativeFile | None = None
        self._reader = None
        self._kept: OrderedDict[int, pa.Array] = OrderedDict()
        sizes = []
        writer = sink = None
        try:
            try:
                for chunk in chunks:
                    if not len(chunk):
                        continue
                    if writer is None:
                        self._folder = tempfile.TemporaryDirectory(prefix="floodgate-xlsx-")
                        sink = pa.OSFile(self._path, "wb")
                        writer = pa.ipc.new_file(sink, self._SCHEMA)
                    writer.write_batch(pa.record_batch([chunk], schema=self._SCHEMA))
                    sizes.append(len(chunk))
            finally:
                if writer is not None:
                    writer.close()
                    sink.close()
        except BaseException:  # a damaged part: nothing is left behind
            self.close()
            raise
        if sizes:
            self._source = pa.OSFile(self._path, "rb")
            self._reader = pa.ipc.open_file(self._source)
        self.starts = np.concatenate([[0], np.cumsum(np.array(sizes, np.int64))])

    @property
    def _path(self) -> str:
        return os.path.join(self._folder.name, "shared-strings.arrow")

    def __enter__(self) -> "_SharedStrings":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._kept.clear()
        self._reader = None
        if self._source is not None:
            self._source.close()
            self._source = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def _chunk(self, c: int) -> pa.Array:
        if c in self._kept:
            self._kept.move_to_end(c)
            return self._kept[c]
        chunk = self._reader.get_batch(c).column(0)
        self._kept[c] = chunk
        if len(self._kept) > self._KEPT:
            self._kept.popitem(last=False)
        return chunk

    @property
    def chunks(self) -> int:
        return len(self.starts) - 1

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, index: np.ndarray) -> pa.Array:
        index = np.asarray(index, np.int64)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError("a shared-string index past the end of the shared strings")
        if not len(index):
            return pa.array([], pa.string())
        which = np.searchsorted(self.starts, index, side="right") - 1
        order = np.argsort(which, kind="stable")
        pieces, ordered_which = [], which[order]
        bounds = np.searchsorted(ordered_which, np.arange(self.chunks + 1))
        for c in range(self.chunks):
            lo, hi = bounds[c], bounds[c + 1]
            if hi > lo:
                pieces.append(self._chunk(c).take(pa.array(index[order[lo:hi]] - self.starts[c])))
        gathered = pa.concat_arrays(pieces)  # in chunk order; put back in the cells' order
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return gathered.take(pa.array(inverse))


class _CellConverter:
    """Cell content and type → the cell's text, column-wise."""

    def __init__(self, strings: _SharedStrings, date_styles: set[int], epoch: datetime):
        self.strings, self.date_styles, self.epoch = strings, date_styles, epoch

    def values(self, cells: _Cells) -> pa.Array:
        content, kind = cells.content, cells.kind
        simple = pc.and_(pc.starts_with(content, "<v>"), pc.ends_with(content, "</v>"))
        value = pc.if_else(simple, pc.utf8_slice_codeunits(content, 3, -4), pa.scalar(None, pa.string()))
        if not pc.all(simple).as_py():  # formulas (<f>…</f><v>…</v>), inline strings, namespaced <x:v>
            found = pc.extract_regex(content, r"<(?:\w+:)?v>(?P<v>[^<]*)</(?:\w+:)?v>").flatten()[0]
            inline = pc.fill_null(pc.equal(kind, "inlineStr"), False)
            if pc.any(inline).as_py():
                texts = _inline_texts(content, inline)
                found = pc.if_else(inline, texts, found)
            value = pc.coalesce(value, found)
        value = _unescape_where_needed(value)
        kind_or_n = pc.fill_null(kind, "n")
        shared = pc.equal(kind_or_n, "s")
        if pc.any(shared).as_py():
            index = pc.cast(pc.if_else(shared, value, "0"), pa.int64())
            value = pc.if_else(shared, self.strings.take(index.to_numpy(zero_copy_only=False)), value)
        boolean = pc.equal(kind_or_n, "b")
        if pc.any(boolean).as_py():
            value = pc.if_else(boolean, pc.if_else(pc.equal(value, "1"), "true", "false"), value)
        number = pc.equal(kind_or_n, "n")
        value = self._numbers(value, number, cells.style)
        return pc.fill_null(value, "")

    def _numbers(self, value: pa.Array, number: pa.Array, style: pa.Array) -> pa.Array:
        """Dates from serial numbers; Excel's 15-digit form where the text carries float noise."""
        odd = pc.and_(number, pc.match_substring_regex(value, r"[eE]|\d{16,}|\.\d*[0-9]{15,}"))
        dated = None
        if self.date_styles:
            dated = pc.and_(number, pc.fill_null(pc.is_in(pc.cast(style, pa.int64()), pa.array(sorted(self.date_styles))), False))
            odd = pc.or_(odd, dated)
        if not pc.any(odd).as_py():
            return value
        where = pc.indices_nonzero(odd)
        texts = value.take(where).to_pylist()
        dates = dated.take(where).to_pylist() if dated is not None else [False] * len(texts)
        fixed = [_date(t, self.epoch) if d else _number(t) for t, d in zip(texts, dates)]
        return pc.replace_with_mask(value, odd, pa.array(fixed, pa.string()))


def _inline_texts(content: pa.Array, inline: pa.Array) -> pa.Array:
    simple = pc.extract_regex(content, r"^<(?:\w+:)?is>\s*<(?:\w+:)?t(?:\s[^>]*)?>(?P<t>[^<]*)</(?:\w+:)?t>\s*</(?:\w+:)?is>$")
    texts = simple.flatten()[0]
    odd = pc.and_(inline, pc.is_null(texts))  # rich text runs, phonetic readings, empty <t/>
    if pc.any(odd).as_py():
        where = pc.indices_nonzero(odd)
        fixed = [_rich_text(c) for c in content.take(where).to_pylist()]
        texts = pc.replace_with_mask(texts, odd, pa.array(fixed, pa.string()))
    return texts


def _rich_text(content: str) -> str:
    if "<rPh" in content or ":rPh" in content:
        content = _PHONETIC.sub("", content)
    return "".join(part[0] for part in _TEXT.findall(content))


def _shared_texts_slowly(piece: str) -> list[str]:
    texts = []
    for item in _SHARED_ITEM.findall(piece):
        texts.append(_rich_text(item))
    return texts


def _unescape_where_needed(values: pa.Array) -> pa.Array:
    needs = pc.fill_null(pc.match_substring_regex(values, r"&|_x[0-9A-Fa-f]{4}_"), False)
    if not pc.any(needs).as_py():
        return values
    fixed = [_unescape(v) for v in values.filter(needs).to_pylist()]
    return pc.replace_with_mask(values, needs, pa.array(fixed, values.type))


def _date(text: str, epoch: datetime) -> str:
    try:
        serial = float(text)
        moment = epoch + timedelta(days=serial)
    except (ValueError, OverflowError):
        return text
    return moment.date().isoformat() if serial == int(serial) else moment.isoformat(timespec="seconds")


def _number(value: str) -> str:
    try:
        shortest = repr(float(format(float(value), ".15g")))
    except ValueError:
        return value
    if "e" in shortest:
        shortest = format(Decimal(shortest), "f")
    return shortest[:-2] if shortest.endswith(".0") else shortest


# The careful path's pattern for a sheet's rows and cells. Groups: "row" and its number (a
# row starts), column letters, style, type, other attributes (when they are not in the
# usual r, s, t order), content. Namespace prefixes (x:c) are allowed.
_SHEET_ITEMS = re.compile(
    r'<(?:\w+:)?(row)\b(?:[^>]*?\br="(\d+)")?[^>]*>'
    r'|<(?:\w+:)?c\b(?: r="([A-Z]+)\d+")?(?: s="(\d+)")?(?: t="(\w+)")?([^>]*?)(?:/>|>(.*?)</(?:\w+:)?c>)',
    re.S,
)
_SHARED_ITEM = re.compile(r"<(?:\w+:)?si\b[^>]*?(?:/>|>(.*?)</(?:\w+:)?si>)", re.S)
_ATTRIBUTE = re.compile(r'\b(r|s|t)="([^"]*)"')
_TEXT = re.compile(r"<(?:\w+:)?t(?:\s[^>]*)?>([^<]*)</(?:\w+:)?t>|<(?:\w+:)?t\s*/>()")
_PHONETIC = re.compile(r"<(?:\w+:)?rPh\b.*?</(?:\w+:)?rPh>", re.S)
_ESCAPED_CONTROL = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _attributes(other: str, letters: str, style: str, kind: str) -> tuple[str, str, str]:
    """r, s and t read from attributes in an unusual order."""
    for name, value in _ATTRIBUTE.findall(other):
        if name == "r" and not letters:
            letters = value.rstrip("0123456789")
        elif name == "s" and not style:
            style = value
        elif name == "t" and not kind:
            kind = value
    return letters, style, kind


def _unescape(text: str) -> str:
    if "&" in text:
        text = html.unescape(text)
    if "_x" in text:  # OOXML writes control characters as _xHHHH_
        text = _ESCAPED_CONTROL.sub(lambda m: chr(int(m.group(1), 16)), text)
    return text
