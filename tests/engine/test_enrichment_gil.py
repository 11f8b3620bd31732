"""The reader's and the writer's pauses (engine/enrichment/gil.py): taken every PIECE_ROWS
records or column, freezing what the collector tracks, and nothing else changes (chunk
boundaries, records, written tables)."""

from __future__ import annotations

import gc
import io
import time

import pyarrow as pa
import pytest
import pyarrow.parquet as pq

from engine.enrichment.gil import PIECE_ROWS, pause_for
from engine.enrichment.output import enriched_table, table_of
from engine.enrichment.pipeline import ChunkWork
from engine.enrichment.readers import read_chunks
from engine.enrichment.template import RequestTemplate


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def ndjson(n: int) -> bytes:
    return b"".join(b'{"id": "r%d", "n": %d, "s": "x%d"}\n' % (i, i, i) for i in range(n))


def test_the_reader_pauses_every_piece_and_cuts_the_same_chunks():
    rows, n = PIECE_ROWS * 2 + 7, PIECE_ROWS * 5 + 3  # chunk size not a multiple of the piece
    pause = Counting()
    paused = list(read_chunks(io.BytesIO(ndjson(n)), "ndjson", "f", rows, pause))
    plain = list(read_chunks(io.BytesIO(ndjson(n)), "ndjson", "f", rows))
    assert [(c.index, c.first_row, c.records) for c in paused] == [(c.index, c.first_row, c.records) for c in plain]
    assert [c.rows for c in paused] == [rows, rows, n - 2 * rows]
    assert pause.calls == 2 + 2  # after records 500 and 1,000 of each full chunk; the last one is shorter


def test_parquet_records_made_in_pieces_equal_one_conversion():
    table = pa.table({"id": [f"r{i}" for i in range(PIECE_ROWS * 3 + 1)], "v": list(range(PIECE_ROWS * 3 + 1))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    (chunk,) = read_chunks(buffer, "parquet", "f", 10 * PIECE_ROWS)
    pause = Counting()
    assert chunk.records_in_pieces(pause) == table.to_pylist()
    assert pause.calls == 3


def test_building_items_pauses_and_builds_the_same_items():
    (chunk,) = read_chunks(io.BytesIO(ndjson(PIECE_ROWS * 2)), "ndjson", "f", PIECE_ROWS * 2)
    template = RequestTemplate(method="POST", path="/v1/enrich", response_fields={"score": "data.score"})
    pause = Counting()
    work = ChunkWork.build(chunk, template, "id", pause)
    assert pause.calls == 1 and [item.rows for item in work.items] == list(range(PIECE_ROWS * 2)) and work.pending == PIECE_ROWS * 2


def test_tables_built_with_pauses_equal_those_without():
    (chunk,) = read_chunks(io.BytesIO(ndjson(50)), "ndjson", "f", 50)
    answers = [{"score": i / 2, "label": f"l{i}"} for i in range(50)]
    columns = {"score": None, "label": "string"}
    pause = Counting()
    assert enriched_table(chunk, list(range(50)), answers, columns, True, pause).equals(
        enriched_table(chunk, list(range(50)), answers, columns, True)
    )
    assert pause.calls == 3 + 2  # before each input column (id, n, s) and each response column
    assert table_of(chunk.records, pause).equals(table_of(chunk.records))


@pytest.fixture
def unfrozen_after():
    """What a pause freezes goes back to the collector after the test (run.py does it after a run)."""
    frozen_before = gc.get_freeze_count()
    yield
    if frozen_before == 0:
        gc.unfreeze()


def test_a_pause_freezes_what_the_collector_tracks(unfrozen_after):
    records = [{"row": i} for i in range(5_000)]  # a chunk's records: young, tracked
    frozen_before = gc.get_freeze_count()
    pause_for(0)()
    young = gc.get_count()[0]
    assert young < 100  # the young generation starts again from (nearly) nothing ...
    assert gc.get_freeze_count() >= frozen_before + len(records)  # ... the records are frozen, not collected
    assert len(records) == 5_000


def test_a_pause_sleeps_with_the_gil_released(unfrozen_after):
    started = time.perf_counter()
    pause_for(0.002)()
    assert time.perf_counter() - started >= 0.0015
