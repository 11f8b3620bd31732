"""`make demo`'s script, end to end in a fresh process, against a persistent instance."""

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_loads_a_week_prints_the_count_and_leaves_the_run_in_the_instance(tmp_path, monkeypatch):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "FLOODGATE_HOME": str(tmp_path / "floodgate"), "DAGSTER_HOME": str(dagster_home)}
    out = subprocess.run(
        [sys.executable, "-m", "orchestration.demo", "--terms", "300"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    match = re.search(r"^([\d,]+) search terms for the week of 2024-01-07", out.stdout, re.M)
    assert match and int(match[1].replace(",", "")) == 300
    assert str(tmp_path / "floodgate" / "data") in out.stdout
    run_id = re.search(r"^run:\s+(\S+)", out.stdout, re.M)[1]
    # dagster.yaml places the event log under DAGSTER_HOME, as every Dagster process has it set
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.is_success
        assert instance.get_materialized_partitions(dg.AssetKey("search_terms_top3_table")) == {"2024-01-07"}
