"""Background threads that take turns with the event loop for the GIL.

The chunk reader (parsing a chunk, building its items) and the chunk writer (Python values
into Arrow columns, Parquet) run in threads beside the event loop that paces the sends.
Their work holds the GIL: about 25 ms a chunk for the reader, 20-40 ms for the writer on
this project's 2-core machine, every 2 s at 4,900 sends/s. A thread that wants the GIL
gets it only after the holder's switch interval (1 ms in a run, run.py), so while a
background thread works the two alternate in 1-ms turns and the loop gets at most half of
the interpreter, about what it needs at 4,900 sends/s; any more load and it falls behind its
schedule, and a GCRA limiter cannot make up more than its burst (limiter.py). Measured
(in-process limiter, 200k records, `bench.enrichment`'s setting): 0.5-0.7 s of the
schedule lost per run, in 20-100 ms stretches every 2 s, each one starting when a chunk
was written and the next one read; with the writer skipped altogether, 0.07 s.

So, when a run is rate-limited, these threads do their work in pieces of about half a
millisecond (`PIECE_ROWS` records, or one column) and sleep `pause` seconds between
pieces, GIL released: the loop gets the GIL at once whenever it wakes in a pause, and at
least pause / (pause + piece) of it while both want it. With 2 ms the reader's chunk
takes ~40 ms longer and the writer's ~20 ms longer, against 2 s per chunk at the limit.
A run without a limit does not pause: its threads' throughput is then what counts.

Measured on a quiet machine (instrumented A/B runs, in-process limiter): 96.1-96.8% of the
limit without pauses, 97.0-97.7% with them. Tried and dropped: a 0.2 or 0.5-ms switch
interval (no measurable change); a nice value of 10 on these threads (worse under other
load: a niced thread holding the GIL waits for a CPU while the loop waits for the GIL); and
converting each column in pieces of 500 or 2,000 values with a pause between them: a
10,000-value column's `pa.array` takes 0.3-0.8 ms (0.5 ms on average in a run, 4 ms at
most), and in pieces the writer used 20-50% more CPU a chunk for no gain measured, quiet or
under load. The pause also freezes the collector's generations (`pause_for`): the objects
of a chunk being read set off a young collection, 5-13 ms with the GIL held, once a chunk.
What is left under other load is contention for the 2 cores; see docs/PERFORMANCE.md,
"Enrichment".
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

Pause = Callable[[], None]

PIECE_ROWS = 500  # records per piece of work between two pauses: ~0.5-1 ms of Python
PAUSE_SECONDS = 0.002  # a background thread's sleep between pieces, GIL released


def pause_for(seconds: float = PAUSE_SECONDS) -> Pause:
    """A pause a background thread calls between pieces of work: it moves every object the
    collector tracks into the permanent generation (`gc.freeze()`, constant time: it joins
    lists), then sleeps with the GIL released.

    The freeze is for the reader: the objects it makes for a chunk (a dict per record, an item
    per request: 20,000 and more) took the young generation over its threshold (20,000,
    run.py) once a chunk, in the middle of the reading, and that collection walked them all
    with the GIL held while the loop waited: 5 ms on average, 13 ms for a middle-generation
    one, measured under load. Frozen after each piece, they are never walked; they are freed
    by their reference counts as before. What the freeze costs: garbage in reference cycles
    that is young at a freeze waits for the run's end (run.py unfreezes then); the engine
    makes none a request (a run with gc.DEBUG_SAVEALL found only argparse's)."""

    def pause() -> None:
        gc.freeze()
        time.sleep(seconds)

    return pause


def no_pause() -> None:
    """For work that need not make way for an event loop (no rate to keep)."""
