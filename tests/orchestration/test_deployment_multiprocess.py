"""The production deployment (docs/DEPLOYMENT.md) as separate processes on this machine:
`dagster code-server start`, `dagster-webserver` and `dagster-daemon`, each on its own,
sharing PostgreSQL instance storage (deploy/dagster.prod.yaml, a fresh database dropped
afterwards) and finding the code location through deploy/workspace.yaml.

Backfills are launched through the webserver's GraphQL API, as the UI launches them; the
daemon's backfill and run-queue loops submit and launch the runs, which run as processes
of the code server. The sinks are the local defaults: the DuckDB warehouse and the books'
results and DuckDB index under FLOODGATE_HOME.

Slow (about two minutes of Dagster processes on two cores): run it under
`flock /tmp/floodgate-bench.lock` on a machine shared with benchmarks."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from conftest import require_service
from engine.books.sample_books import write_books
from engine.search_terms.sample_report import write_report_file
from resources.warehouse import DuckDBWarehouse

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get("FLOODGATE_TEST_POSTGRES_URL", "host=127.0.0.1 port=5432 dbname=test")

TERMS = 200  # per weekly report: small, so that a run's cost is mostly Dagster's own
WEEKS = [(date(2024, 1, 7) + timedelta(weeks=n)).isoformat() for n in range(6)]
BOOKS, BOOKS_PER_RUN = 6, 3
RUN_LIMIT = 2  # this machine's two cores (the production file says 8)
SEARCH_TERMS_ASSETS = ["search_terms_report", "parsed_search_terms", "search_term_top3", "search_terms_top3_table"]
BOOKS_ASSETS = ["book_text", "book_summary", "book_embedding", "book_search_index"]
DEADLINE_SECONDS = 240


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE_SECONDS, every: float = 0.25):
    """condition()'s first truthy value, polled until `timeout`; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)  # a polling interval: the condition is what is waited for
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- PostgreSQL ---------------------------------------------------------------------------


def postgres_or_skip() -> dict:
    """libpq parameters of a reachable server (as tests/resources/test_catalog_db.py finds it)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    for url in (POSTGRES_URL, POSTGRES_URL + " user=postgres"):
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                return {**conninfo_to_dict(url), "host": conn.info.host, "port": conn.info.port, "user": conn.info.user}
        except psycopg.Error:
            continue
    require_service("PostgreSQL on 127.0.0.1:5432 is not reachable: start it or set FLOODGATE_TEST_POSTGRES_URL")


@contextmanager
def fresh_database(server: dict):
    """A database of its own for the session's instance, dropped (connections and all) afterwards."""
    import psycopg

    name = f"floodgate_deploy_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(**server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(**server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the processes ------------------------------------------------------------------------


@dataclass
class Deployment:
    env: dict[str, str]
    home: Path  # FLOODGATE_HOME: the object store's directory, the DuckDB warehouse and index
    dagster_home: Path
    logs: Path
    graphql_url: str
    password: str
    postgres: dict  # libpq parameters of the instance's database, for the test's own checks
    books: list[str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """A process of its own session, its output appended to logs/<name>.log."""
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes[name] = process
        return process

    def start_daemon(self) -> subprocess.Popen:
        return self.start("daemon", str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "deploy/workspace.yaml"))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, sig)  # the process and any child it started, nothing else
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a shutdown that hangs must not outlive the test
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)

    def graphql(self, query: str, **variables) -> dict:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(self.graphql_url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    def instance(self) -> dg.DagsterInstance:
        """The test's own view of the deployment's instance (the same Postgres database)."""
        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def log_text(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs.iterdir())


def instance_yaml(dagster_home: Path) -> None:
    """deploy/dagster.prod.yaml as shipped, with the run limit of this two-core machine."""
    config = yaml.safe_load((ROOT / "deploy/dagster.prod.yaml").read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = RUN_LIMIT
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))


def environment(server: dict, database: str, tmp: Path, code_server_port: int, password: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_DEPLOYMENT", "FLOODGATE_HOME")}
    return {
        **inherited,
        "DAGSTER_HOME": str(tmp / "dagster_home"),
        "DAGSTER_PG_HOST": server["host"],
        "DAGSTER_PG_PORT": str(server["port"]),
        "DAGSTER_PG_USER": server["user"],
        # the server's own password, or (trust authentication) a marker the logs must not show
        "DAGSTER_PG_PASSWORD": password,
        "DAGSTER_PG_DB": database,
        "FLOODGATE_CODE_SERVER_HOST": "127.0.0.1",
        "FLOODGATE_CODE_SERVER_PORT": str(code_server_port),
        "FLOODGATE_HOME": str(tmp / "floodgate"),
        "BOOKS_PARTITIONS_PER_RUN": str(BOOKS_PER_RUN),
        "BOOKS_WORKERS": "1",
        "FLOODGATE_PROGRESS_SECONDS": "600",
    }


LOCATION_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def location_loaded(deployment: Deployment) -> bool:
    entries = deployment.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    loaded = {e["name"]: (e["locationOrLoadError"] or {}).get("__typename") for e in entries}.get("floodgate")
    if loaded == "PythonError":
        # the webserver asked before the code server was up: ask again, as the UI's Reload does
        deployment.graphql('mutation { reloadRepositoryLocation(repositoryLocationName: "floodgate") { __typename } }')
    return loaded == "RepositoryLocation"


def webserver_answers(deployment: Deployment) -> bool:
    try:
        return location_loaded(deployment)
    except OSError:  # not listening yet
        return False


REPOSITORY = {"repositoryLocationName": "floodgate", "repositoryName": "__repository__"}
INSTIGATORS_QUERY = """
query($repo: RepositorySelector!) { repositoryOrError(repositorySelector: $repo) { ... on Repository {
    sensors { name sensorState { id status } }
    schedules { name scheduleState { id status } } } } }"""


def stop_automations(deployment: Deployment) -> None:
    """Stop every sensor and schedule, as an operator would in the UI: the test's backfills
    must be the only runs (the sensors would otherwise request runs for the same files)."""
    repository = deployment.graphql(INSTIGATORS_QUERY, repo=REPOSITORY)["repositoryOrError"]
    for sensor in repository["sensors"]:
        if sensor["sensorState"]["status"] == "RUNNING":
            deployment.graphql("mutation($id: String) { stopSensor(id: $id) { __typename } }", id=sensor["sensorState"]["id"])
    for schedule in repository["schedules"]:
        if schedule["scheduleState"]["status"] == "RUNNING":
            deployment.graphql(
                "mutation($id: String) { stopRunningSchedule(id: $id) { __typename } }", id=schedule["scheduleState"]["id"]
            )
    repository = deployment.graphql(INSTIGATORS_QUERY, repo=REPOSITORY)["repositoryOrError"]
    states = [s["sensorState"]["status"] for s in repository["sensors"]] + [
        s["scheduleState"]["status"] for s in repository["schedules"]
    ]
    assert states and set(states) == {"STOPPED"}, repository


def write_sample_data(home: Path) -> list[str]:
    """A report for every week of WEEKS and BOOKS texts; returns the books' IDs."""
    for n, week in enumerate(WEEKS):
        write_report_file(home / "data/search_terms/reports" / f"{week}.json", date.fromisoformat(week), terms=TERMS, seed=n)
    return sorted(book.book_id for book in write_books(home / "data", BOOKS, words=80, seed=7))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    server = postgres_or_skip()
    tmp = tmp_path_factory.mktemp("deployment")
    code_server_port, webserver_port = free_port(), free_port()
    password = server.get("password") or f"not-a-real-password-{secrets.token_hex(8)}"
    with ExitStack() as stack:
        database = stack.enter_context(fresh_database(server))
        env = environment(server, database, tmp, code_server_port, password)
        (tmp / "dagster_home").mkdir()
        (tmp / "logs").mkdir()
        instance_yaml(tmp / "dagster_home")
        deployment = Deployment(
            env=env,
            home=tmp / "floodgate",
            dagster_home=tmp / "dagster_home",
            logs=tmp / "logs",
            graphql_url=f"http://127.0.0.1:{webserver_port}/graphql",
            password=password,
            postgres={**server, "dbname": database},
            books=write_sample_data(tmp / "floodgate"),
        )
        stack.callback(lambda: [deployment.kill(name, signal.SIGTERM) for name in list(deployment.processes)])
        # the variables the instance's configuration reads, for the test's own view of it
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for name in ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
            patch.setenv(name, env[name])
        deployment.start("code-server", str(BIN / "dagster"), "code-server", "start", "-m", "orchestration.definitions",
                         "-d", str(ROOT), "-h", "127.0.0.1", "-p", str(code_server_port), "--location-name", "floodgate")
        deployment.start("webserver", str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(webserver_port),
                         "-w", str(ROOT / "deploy/workspace.yaml"))
        wait_for(lambda: webserver_answers(deployment), "the webserver to serve the floodgate code location")
        stop_automations(deployment)
        deployment.start_daemon()
        yield deployment


# -- backfills through GraphQL ----------------------------------------------------------


LAUNCH = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"""


def launch_backfill(deployment: Deployment, assets: list[str], partitions: list[str], title: str) -> str:
    params = {
        "partitionNames": partitions,
        "assetSelection": [{"path": [name]} for name in assets],
        "fromFailure": False,
        "title": title,
    }
    answer = deployment.graphql(LAUNCH, params=params)["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer
    return answer["backfillId"]


def backfill_status(deployment: Deployment, backfill_id: str) -> str:
    return deployment.graphql(BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"]["status"]


def finished(deployment: Deployment, backfill_id: str) -> str | None:
    status = backfill_status(deployment, backfill_id)
    return status if status not in ("REQUESTED", "CANCELING") else None


def add_books(deployment: Deployment, keys: list[str]) -> None:
    """Register the books as dynamic partitions, as the books sensor (or the UI) does."""
    for key in keys:
        answer = deployment.graphql(
            """mutation($repo: RepositorySelector!, $key: String!) {
                addDynamicPartition(repositorySelector: $repo, partitionsDefName: "books", partitionKey: $key) {
                    __typename } }""",
            repo=REPOSITORY,
            key=key,
        )["addDynamicPartition"]
        assert answer["__typename"] == "AddDynamicPartitionSuccess", answer


def backfill_runs(instance: dg.DagsterInstance, backfill_id: str) -> list:
    return instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))


# -- the sinks ----------------------------------------------------------------------------


def warehouse_rows(deployment: Deployment) -> dict[str, int]:
    """Rows per week in the DuckDB warehouse table, and the duplicated (week, department,
    term) keys, which must be none."""
    warehouse = DuckDBWarehouse(path=str(deployment.home / "warehouse.duckdb"))
    duplicates = warehouse.query(
        "SELECT week_start, department_name, search_term FROM search_terms_top3 GROUP BY ALL HAVING count(*) > 1"
    )
    assert duplicates == [], duplicates[:5]
    return {str(week): n for week, n in warehouse.query("SELECT week_start, count(*) FROM search_terms_top3 GROUP BY 1")}


def indexed_books(deployment: Deployment) -> list[str]:
    """Book IDs in the DuckDB search index, one entry each."""
    import duckdb

    with duckdb.connect(str(deployment.home / "books_index.duckdb"), read_only=True) as con:
        duplicates = con.execute("SELECT book_id FROM books GROUP BY 1 HAVING count(*) > 1").fetchall()
        assert duplicates == [], duplicates
        return sorted(row[0] for row in con.execute("SELECT book_id FROM books").fetchall())


def book_results(deployment: Deployment, book: str) -> set[str]:
    return {path.name for path in (deployment.home / "data/books/results" / book).iterdir()}


# -- the tests ----------------------------------------------------------------------------


def test_backfills_launched_through_the_webserver_are_run_by_the_daemon(deployment):
    weeks = WEEKS[:3]
    week_backfill = launch_backfill(deployment, SEARCH_TERMS_ASSETS, weeks, "weeks")
    add_books(deployment, deployment.books)
    books_backfill = launch_backfill(deployment, BOOKS_ASSETS, deployment.books, "books")

    assert wait_for(lambda: finished(deployment, week_backfill), "the weeks' backfill") == "COMPLETED_SUCCESS"
    assert wait_for(lambda: finished(deployment, books_backfill), "the books' backfill") == "COMPLETED_SUCCESS"

    with deployment.instance() as instance:
        for asset in SEARCH_TERMS_ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(weeks), asset
        for asset in BOOKS_ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(deployment.books), asset
        week_runs, book_runs = backfill_runs(instance, week_backfill), backfill_runs(instance, books_backfill)
        assert len(week_runs) == len(weeks)  # no backfill policy: a run per week
        assert len(book_runs) == BOOKS // BOOKS_PER_RUN  # BackfillPolicy.multi_run, from the code server's environment
        assert {run.status for run in week_runs + book_runs} == {DagsterRunStatus.SUCCESS}

    assert warehouse_rows(deployment) == dict.fromkeys(weeks, TERMS)
    assert indexed_books(deployment) == deployment.books
    for book in deployment.books:
        assert {"book.json", "summary.json", "embedding.json"} <= book_results(deployment, book)


def in_flight_with_queue_behind(instance: dg.DagsterInstance, backfill_id: str, partitions: int):
    """The backfill's runs once every one is submitted, one or more has started and one or
    more still waits in the queue, and none is being launched (STARTING): the moment to
    kill the daemon, between two launches rather than inside one."""
    runs = backfill_runs(instance, backfill_id)
    statuses = [run.status for run in runs]
    if len(runs) == partitions and all(run.is_finished for run in runs):
        pytest.fail(f"every run finished before one was seen running with others queued: {statuses}")
    submitted = len(runs) == partitions  # the backfill loop has put every run in the queue
    mid_way = DagsterRunStatus.STARTED in statuses and DagsterRunStatus.QUEUED in statuses
    return runs if submitted and mid_way and DagsterRunStatus.STARTING not in statuses else None


def test_a_backfill_survives_the_daemon_killed_mid_way(deployment):
    backfill_id = launch_backfill(deployment, SEARCH_TERMS_ASSETS, WEEKS, "weeks, daemon killed")
    with deployment.instance() as instance:
        wait_for(lambda: in_flight_with_queue_behind(instance, backfill_id, len(WEEKS)), "runs in flight with more queued")
        deployment.kill("daemon")  # SIGKILL: no shutdown of any kind
        # read after the kill: these runs can only have been launched by the restarted daemon
        queued = {run.run_id for run in backfill_runs(instance, backfill_id) if run.status == DagsterRunStatus.QUEUED}

        deployment.start_daemon()
        assert wait_for(lambda: finished(deployment, backfill_id), "the backfill after the restart") == "COMPLETED_SUCCESS"

        runs = backfill_runs(instance, backfill_id)
        assert {run.status for run in runs} == {DagsterRunStatus.SUCCESS}
        run_weeks = sorted(run.tags["dagster/partition"] for run in runs)
        assert run_weeks == sorted(WEEKS)  # each week once: the restarted daemon resubmitted nothing
        # and it launched what the killed one had left in the queue
        assert queued and all(instance.get_run_by_id(run_id).is_success for run_id in queued)
        for asset in SEARCH_TERMS_ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(WEEKS), asset

    # every week exactly once, including the weeks the first test loaded and this one replaced
    assert warehouse_rows(deployment) == dict.fromkeys(WEEKS, TERMS)


def tables_containing(postgres: dict, text: str) -> list[str]:
    """The instance database's tables with a row whose text contains `text`."""
    import psycopg

    with psycopg.connect(**postgres) as conn:
        tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return [
            table
            for table in tables
            if conn.execute(f'SELECT 1 FROM "{table}" t WHERE t::text LIKE %s LIMIT 1', (f"%{text}%",)).fetchone()
        ]


def test_the_database_password_reaches_no_log_and_no_stored_record(deployment):
    """DAGSTER_PG_PASSWORD stays in the environment: not in the processes' output, not in
    the instance's tables (runs, their events and configuration), not under DAGSTER_HOME."""
    assert deployment.password not in deployment.log_text()
    assert "daemon_heartbeats" in tables_containing(deployment.postgres, "BACKFILL")  # the search finds text
    assert tables_containing(deployment.postgres, deployment.password) == []
    for path in deployment.dagster_home.rglob("*"):
        if path.is_file():
            assert deployment.password.encode() not in path.read_bytes(), path
