"""Opening a DuckDB file that another process may be writing: DuckDB lets one process hold
a database file for writing, and a second gets a lock error; waiting briefly is enough for
the short writes floodgate makes."""

from __future__ import annotations

import time
from pathlib import Path


def connect_waiting(path: str, *, read_only: bool = False, config: dict | None = None, timeout: float = 120.0):
    import duckdb

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if read_only and not Path(path).exists():
        read_only = False  # the first connection creates the file
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return duckdb.connect(path, read_only=read_only, config=config or {})
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)  # another process holds the file: back off and try again
            delay = min(delay * 2, 2.0)
