"""Issue 7, item 3: one run's steps spread over two Celery workers.

Two `dagster-celery` worker processes listen on the RabbitMQ on loopback; a run of the
search-terms job for one week, with FLOODGATE_EXECUTOR=celery, is started in a process of
its own (as a run worker would be) against a persistent instance in a temporary
DAGSTER_HOME. Each step is a Celery task: the run's event log names the worker that took
it, and the step's events come from that worker's process, not the run's. Both workers
share the object store (a directory) and the DuckDB warehouse with the run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from assets.search_terms.settings import SearchTermsSettings
from conftest import require_service
from engine.search_terms.sample_report import write_report_file

ROOT = Path(__file__).resolve().parents[2]
BROKER = os.environ.get("FLOODGATE_TEST_CELERY_BROKER_URL", "pyamqp://guest@127.0.0.1:5672//")
QUEUE = "dagster"  # dagster-celery's queue (declared with priorities by its app)
WEEK = date(2024, 1, 7)
STEPS = {"search_terms_report", "parse_search_terms", "search_terms_top3_table"}

# The run process: what a run worker does with the run (execute_job with a reconstructable
# job, so each Celery worker can load the same job by module and name).
RUN_SCRIPT = """
import json, sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

repository = ReconstructableRepository.for_module("orchestration.definitions", "defs", working_directory=sys.argv[1])
job = repository.get_reconstructable_job("search_terms_weekly")
with dg.DagsterInstance.get() as instance:
    result = dg.execute_job(job, instance, tags={"dagster/partition": sys.argv[2]})
    print(json.dumps({"run_id": result.run_id, "success": result.success}))
"""


def broker_or_skip() -> None:
    from kombu import Connection

    try:
        with Connection(BROKER, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any failure means there is no broker to use
        require_service(f"RabbitMQ at {BROKER} is not reachable ({type(exc).__name__}): start it (.ci/run does)")


def purge_queue() -> None:
    """Tasks a killed earlier session left in the queue would occupy a worker."""
    from kombu import Connection

    with Connection(BROKER) as connection:
        channel = connection.channel()
        try:
            channel.queue_purge(QUEUE)
        except Exception:  # noqa: BLE001 - no queue yet: nothing to purge
            pass


@pytest.fixture
def environment(tmp_path) -> dict:
    home, dagster_home = tmp_path / "floodgate", tmp_path / "dagster_home"
    dagster_home.mkdir()
    return {
        **os.environ,
        "FLOODGATE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_DEPLOYMENT": "local",
        "FLOODGATE_EXECUTOR": "celery",
        "FLOODGATE_CELERY_BROKER_URL": BROKER,
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def workers(environment):
    """Two workers, one step at a time each, ready (answering a ping) before the test goes on."""
    from celery import Celery

    broker_or_skip()
    purge_queue()
    names = [f"floodgate-test-{i}-{os.getpid()}@localhost" for i in (1, 2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "-b", BROKER, "worker", "-n", name,
             "-Q", QUEUE, "--concurrency", "1", "--prefetch-multiplier", "1", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for name in names
    ]
    control = Celery(broker=BROKER)
    try:
        deadline = time.monotonic() + 120
        answered: set[str] = set()
        while answered != set(names):
            for process in processes:
                if process.poll() is not None:
                    pytest.fail(f"a Celery worker exited with {process.returncode}:\n{process.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, f"workers not ready; answered: {answered}"
            answered = {name for reply in control.control.ping(destination=names, timeout=1.0) for name in reply}
        yield names
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)  # a warm shutdown: the current task finishes
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        control.close()
        purge_queue()


def test_one_runs_steps_execute_on_two_celery_workers(environment, workers):
    home, settings = Path(environment["FLOODGATE_HOME"]), SearchTermsSettings()
    report = home / "data" / settings.report_candidates(WEEK)[0]
    write_report_file(report, WEEK, terms=2_000, seed=7)
    terms = {(r["departmentName"], r["searchTerm"]) for r in json.loads(report.read_text())["dataByDepartmentAndSearchTerm"]}

    run = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, str(ROOT), WEEK.isoformat()],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])

    with dg.DagsterInstance.from_config(environment["DAGSTER_HOME"]) as instance:
        records = instance.all_logs(outcome["run_id"])
    assert outcome["success"], [r.message for r in records if r.dagster_event and r.dagster_event.is_failure]

    # dagster-celery reports, for each step, the worker that took its task
    took = {
        r.step_key: r.dagster_event.engine_event_data.metadata["Celery worker"].value
        for r in records
        if r.dagster_event and r.dagster_event.is_engine_event and r.dagster_event.engine_event_data
        and "Celery worker" in r.dagster_event.engine_event_data.metadata
    }
    assert set(took) == STEPS
    assert set(took.values()) == set(workers), took  # both workers ran steps of this one run

    # and the steps' own events come from processes other than the run's
    run_pid = next(r.dagster_event.pid for r in records if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.RUN_START)
    step_pids = {r.step_key: r.dagster_event.pid for r in records
                 if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.STEP_START}
    assert set(step_pids) == STEPS and run_pid not in step_pids.values()
    assert len(set(step_pids.values())) == 2

    # the week is in the warehouse the workers wrote
    import duckdb

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as warehouse:
        loaded = warehouse.execute(
            f"SELECT department_name, search_term FROM {settings.warehouse_table} WHERE week_start = ?", [WEEK]
        ).fetchall()
    assert len(loaded) == len(terms) and set(loaded) == terms
