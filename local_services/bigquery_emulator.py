"""The BigQuery API on a loopback port: the local-bigquery emulator, run from its own Python.

local-bigquery needs Python 3.13 while floodgate runs on 3.11, so `make` builds it a
virtual environment of its own (.venv-bigquery, from requirements-bigquery-emulator.lock)
and this module starts it there as a subprocess. The official client talks HTTP to it.

What the emulator lacks (version 0.3.2): table decorators (`table$20240107` becomes a table
of that name), so BigQueryWarehouse's partition_decorator method is tested against real
BigQuery only.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMULATOR_VENV = Path(os.environ.get("FLOODGATE_BIGQUERY_EMULATOR_VENV", ROOT / ".venv-bigquery"))
PROJECT = "local"


class EmulatorUnavailable(RuntimeError):
    pass


def emulator_command(venv: Path = EMULATOR_VENV) -> Path:
    command = venv / "bin" / "local-bigquery"
    if not command.exists():
        raise EmulatorUnavailable(f"no BigQuery emulator at {command}: `make bigquery-emulator` builds it")
    return command


@contextlib.contextmanager
def bigquery_emulator(data_dir: Path, venv: Path = EMULATOR_VENV, start_timeout: float = 60.0) -> Iterator[str]:
    """Run the emulator on free loopback ports, its data under data_dir; yield its REST URL."""
    command = emulator_command(venv)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "emulator.log"
    env = {**os.environ, "HOME": str(venv / "home")}  # where make installed its DuckDB extensions
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(command), "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0", "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield _wait_for_url(process, log_path, start_timeout)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_url(process: subprocess.Popen, log_path: Path, timeout: float) -> str:
    """The URL uvicorn announces once it listens (port 0: the kernel chose it)."""
    deadline = time.monotonic() + timeout
    announced = re.compile(rb"Uvicorn running on (http://[0-9.]+:\d+)")
    while time.monotonic() < deadline:
        match = announced.search(log_path.read_bytes())
        if match:
            return match.group(1).decode()
        if process.poll() is not None:
            raise EmulatorUnavailable(f"the BigQuery emulator exited ({process.returncode}): {log_path.read_text()[-2000:]}")
        time.sleep(0.05)  # polling the log for the announcement, not standing in for it
    raise EmulatorUnavailable(f"the BigQuery emulator did not start within {timeout:.0f} s: {log_path}")
