"""The code location loads under DAGSTER_DEPLOYMENT=local, refuses anything else clearly,
and takes its settings and paths from the environment."""

import importlib
import os
from pathlib import Path

import dagster as dg
import pytest

import orchestration.deployment as deployment
from assets.search_terms.settings import SearchTermsSettings
from resources.object_store import LocalDirectoryObjectStore
from resources.warehouse import DuckDBWarehouse

SEARCH_TERMS_ASSETS = ["search_terms_report", "parsed_search_terms", "search_term_top3", "search_terms_top3_table"]
EDGES = {
    "search_terms_report": set(),
    "parsed_search_terms": {"search_terms_report"},
    "search_term_top3": {"parsed_search_terms"},
    "search_terms_top3_table": {"search_term_top3"},
}
ENV_VARS = [
    "DAGSTER_DEPLOYMENT",
    "FLOODGATE_HOME",
    "FLOODGATE_PROGRESS_SECONDS",
    "SEARCH_TERMS_REPORTS_PREFIX",
    "SEARCH_TERMS_OUTPUT_PREFIX",
    "SEARCH_TERMS_TABLE",
    "SEARCH_TERMS_MAX_REJECT_FRACTION",
    "SEARCH_TERMS_TOTAL_SHARE_TOLERANCE",
    "SEARCH_TERMS_CHUNK_MB",
    "SEARCH_TERMS_SCAN_WORKERS",
    "SEARCH_TERMS_DUCKDB_MEMORY_LIMIT",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOODGATE_HOME", str(tmp_path / "home"))


@pytest.fixture
def load_definitions(monkeypatch):
    """Import orchestration.definitions afresh under the current environment."""
    loaded = []

    def load():
        import orchestration.definitions as module

        loaded.append(module)
        return importlib.reload(module).defs

    yield load
    if loaded:  # leave a module built from a clean local environment for whoever imports it next
        for name in ENV_VARS:
            monkeypatch.delenv(name, raising=False)
        importlib.reload(loaded[0])


@pytest.mark.parametrize("value", [None, "local", "LOCAL", " local ", ""])
def test_definitions_load_locally_and_every_job_resolves(monkeypatch, load_definitions, value, tmp_path):
    if value is not None:
        monkeypatch.setenv("DAGSTER_DEPLOYMENT", value)
    assert deployment.deployment() == deployment.LOCAL
    defs = load_definitions()
    dg.Definitions.validate_loadable(defs)

    job_names = [job.name for job in defs.jobs]
    assert "search_terms_weekly" in job_names
    for name in job_names:
        assert defs.resolve_job_def(name).name == name
    resolved = defs.resolve_all_job_defs()
    assert {j.name for j in resolved} >= set(job_names)

    job = defs.resolve_job_def("search_terms_weekly")
    assert job.partitions_def is not None
    assert job.partitions_def.get_first_partition_key() == "2023-01-01"

    resources = defs.resources
    assert isinstance(resources["object_store"], LocalDirectoryObjectStore)
    assert isinstance(resources["warehouse"], DuckDBWarehouse)
    assert isinstance(resources["search_terms_settings"], SearchTermsSettings)
    assert Path(resources["object_store"].root) == tmp_path / "home" / "data"


def test_asset_graph_has_the_search_terms_chain(load_definitions):
    graph = load_definitions().resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(SEARCH_TERMS_ASSETS) <= keys
    for name, parents in EDGES.items():
        node = graph.get(dg.AssetKey(name))
        assert {p.to_user_string() for p in node.parent_keys} == parents, name
        assert node.partitions_def is not None
        assert node.group_name == "search_terms"


def test_the_weekly_job_selects_all_four_assets(load_definitions):
    job = load_definitions().resolve_job_def("search_terms_weekly")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert selected == set(SEARCH_TERMS_ASSETS)


@pytest.mark.parametrize("value", ["staging", "production", "dev", "prod2"])
def test_unknown_deployment_is_refused_with_the_allowed_values(monkeypatch, value):
    monkeypatch.setenv("DAGSTER_DEPLOYMENT", value)
    with pytest.raises(deployment.DeploymentError) as info:
        deployment.deployment()
    message = str(info.value)
    assert "'local'" in message and "'prod'" in message and value in message
    with pytest.raises(deployment.DeploymentError):
        deployment.resources()
    assert issubclass(deployment.DeploymentError, ValueError)


def test_unknown_deployment_fails_loading_the_definitions(monkeypatch, load_definitions):
    monkeypatch.setenv("DAGSTER_DEPLOYMENT", "staging")
    with pytest.raises(deployment.DeploymentError, match="must be 'local' or 'prod'"):
        load_definitions()


PROD_ENV = {
    "FLOODGATE_S3_BUCKET": "reports-bucket",
    "FLOODGATE_S3_ENDPOINT_URL": "http://127.0.0.1:1",
    "AWS_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "AKIA-not-a-real-key",
    "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
    "FLOODGATE_BIGQUERY_PROJECT": "analytics-project",
    "FLOODGATE_BIGQUERY_DATASET": "brand_analytics",
    "FLOODGATE_BIGQUERY_ENDPOINT": "http://127.0.0.1:2",
}


@pytest.mark.parametrize("missing", ["FLOODGATE_S3_BUCKET", "FLOODGATE_BIGQUERY_PROJECT", "FLOODGATE_BIGQUERY_DATASET"])
def test_prod_without_a_required_variable_is_refused_naming_it(monkeypatch, load_definitions, missing):
    monkeypatch.setenv("DAGSTER_DEPLOYMENT", "prod")
    for name, value in PROD_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(missing)
    with pytest.raises(deployment.DeploymentError, match=missing):
        load_definitions()


@pytest.mark.parametrize("value", ["prod", "PROD", " prod"])
def test_prod_loads_s3_and_bigquery_from_the_environment_and_every_job_resolves(monkeypatch, load_definitions, value):
    from resources.bigquery_warehouse import BigQueryWarehouse
    from resources.s3_object_store import S3ObjectStore

    monkeypatch.setenv("DAGSTER_DEPLOYMENT", value)
    for name, setting in PROD_ENV.items():
        monkeypatch.setenv(name, setting)
    for name in ("AWS_SESSION_TOKEN", "FLOODGATE_S3_PREFIX", "FLOODGATE_BIGQUERY_CREDENTIALS", "FLOODGATE_BIGQUERY_LOCATION"):
        monkeypatch.delenv(name, raising=False)
    defs = load_definitions()
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("search_terms_weekly").partitions_def is not None
    assert sorted(s.name for s in defs.sensors) == [
        "books_automation", "books_partitions_sensor", "catalog_upload_failed_sensor", "catalog_uploads_sensor",
        "catalog_webhook_redelivery_sensor", "enrichment_files_sensor", "search_terms_report_sensor",
    ]

    resources = deployment.resources()
    store, warehouse = resources["object_store"], resources["warehouse"]
    assert isinstance(store, S3ObjectStore) and isinstance(warehouse, BigQueryWarehouse)
    # secrets stay references to their variables: the UI and the run config show names only
    assert store.aws_secret_access_key == dg.EnvVar("AWS_SECRET_ACCESS_KEY")
    assert "not-a-real-secret" not in repr(store) and "not-a-real-secret" not in repr(warehouse)
    assert store.aws_session_token is None  # unset: boto3's own chain decides
    assert warehouse.bigquery.gcp_credentials is None
    assert warehouse.dataset == dg.EnvVar("FLOODGATE_BIGQUERY_DATASET")
    assert warehouse.replace_method == "transaction"



def test_settings_defaults_without_environment():
    settings, defaults = deployment.search_terms_settings(), SearchTermsSettings()
    assert {f: getattr(settings, f) for f in SearchTermsSettings.model_fields} == {
        f: getattr(defaults, f) for f in SearchTermsSettings.model_fields
    }


@pytest.mark.parametrize(
    "var, value, field, expected",
    [
        ("SEARCH_TERMS_MAX_REJECT_FRACTION", "0.05", "max_reject_fraction", 0.05),
        ("SEARCH_TERMS_TOTAL_SHARE_TOLERANCE", "0.001", "total_share_tolerance", 0.001),
        ("SEARCH_TERMS_CHUNK_MB", "16", "chunk_mb", 16),
        ("SEARCH_TERMS_SCAN_WORKERS", "7", "scan_workers", 7),
        ("SEARCH_TERMS_REPORTS_PREFIX", "landing/reports", "reports_prefix", "landing/reports"),
        ("SEARCH_TERMS_OUTPUT_PREFIX", "out/st", "output_prefix", "out/st"),
        ("SEARCH_TERMS_TABLE", "st_top3_v2", "warehouse_table", "st_top3_v2"),
        ("SEARCH_TERMS_DUCKDB_MEMORY_LIMIT", "2GB", "duckdb_memory_limit", "2GB"),
        ("FLOODGATE_PROGRESS_SECONDS", "0.5", "progress_interval_seconds", 0.5),
        ("SEARCH_TERMS_PARQUET_COMPRESSION", "zstd", "parquet_compression", "zstd"),
    ],
)
def test_environment_overrides_settings(monkeypatch, var, value, field, expected):
    default = getattr(SearchTermsSettings(), field)
    assert default != expected
    monkeypatch.setenv(var, value)
    settings = deployment.search_terms_settings()
    assert getattr(settings, field) == expected
    assert deployment.local_resources()["search_terms_settings"] == settings
    # nothing else changed
    fields = [f for f in SearchTermsSettings.model_fields if f != field]
    assert len(fields) == len(deployment.SEARCH_TERMS_VARIABLES) - 1
    assert {f: getattr(settings, f) for f in fields} == {f: getattr(SearchTermsSettings(), f) for f in fields}


def test_setting_override_reaches_the_definitions(monkeypatch, load_definitions):
    monkeypatch.setenv("SEARCH_TERMS_MAX_REJECT_FRACTION", "0.05")
    assert load_definitions().resources["search_terms_settings"].max_reject_fraction == 0.05


def test_floodgate_home_moves_the_store_and_the_warehouse(monkeypatch, tmp_path, load_definitions):
    home = tmp_path / "elsewhere"
    monkeypatch.setenv("FLOODGATE_HOME", str(home))
    resources = deployment.local_resources()
    assert Path(resources["object_store"].root) == home / "data"
    assert Path(resources["warehouse"].path) == home / "warehouse.duckdb"
    defs = load_definitions()
    assert Path(defs.resources["object_store"].root) == home / "data"
    assert Path(defs.resources["warehouse"].path) == home / "warehouse.duckdb"


def test_relative_floodgate_home_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOODGATE_HOME", "rel/home")
    resources = deployment.local_resources()
    assert Path(resources["object_store"].root) == tmp_path / "rel" / "home" / "data"
    assert Path(resources["warehouse"].path).is_absolute()


def test_default_home_is_dot_floodgate_in_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOODGATE_HOME")
    assert deployment.floodgate_home() == tmp_path / ".floodgate"
    assert Path(deployment.local_resources()["warehouse"].path) == tmp_path / ".floodgate" / "warehouse.duckdb"


def test_a_bad_setting_in_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("SEARCH_TERMS_MAX_REJECT_FRACTION", "5%")
    with pytest.raises(deployment.DeploymentError, match="SEARCH_TERMS_MAX_REJECT_FRACTION='5%'"):
        deployment.search_terms_settings()


def test_loading_the_code_location_leaves_each_pipelines_heavy_clients_unimported(tmp_path):
    """Every run's process loads the whole code location before its first step: a client
    only one pipeline uses (aiohttp alone is about 8 MB resident; pyarrow.parquet, which
    loads libparquet and every pyarrow filesystem, S3's with OpenSSL, is not used by the
    catalog) is imported by the code that uses it, not by the definitions. Checked in a
    fresh interpreter, as a run starts."""
    import json
    import subprocess
    import sys

    heavy = ["aiohttp", "duckdb", "boto3", "botocore", "opensearchpy", "openpyxl", "redis", "psycopg",
             "google.cloud.bigquery", "torch", "sentence_transformers", "fastembed", "pyspark", "pyarrow.parquet"]
    probe = (
        "import json, sys\n"
        "import orchestration.definitions\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2], env={**os.environ, "FLOODGATE_HOME": str(tmp_path)},
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_loading_the_code_location_freezes_what_it_loaded_out_of_the_cyclic_collector(tmp_path):
    """A run's process loads the code location first; each full collection during the run
    would walk every object loading left (bench.catalog measured 0.11-0.13 s a run)."""
    import subprocess
    import sys

    probe = (
        "import gc\n"
        "import orchestration.definitions\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2], env={**os.environ, "FLOODGATE_HOME": str(tmp_path)},
    )
    frozen, tracked = map(int, out.stdout.split()[-2:])
    assert frozen > 100_000 and tracked < frozen / 10, (frozen, tracked)
