"""The production instance and workspace files (deploy/) as Dagster reads them, without
starting anything; tests/orchestration/test_deployment_multiprocess.py runs them."""

import re
import shutil
from pathlib import Path

import yaml
from dagster._core.instance.config import dagster_instance_config

from orchestration.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
PROD = ROOT / "deploy/dagster.prod.yaml"


def test_the_production_instance_reads_every_connection_setting_from_the_environment():
    postgres = yaml.safe_load(PROD.read_text())["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in postgres.items() if k != "scheme"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }
    # psycopg2 by name: on psycopg 3 (SQLAlchemy 2.1's default) dagster-postgres' event writes fail
    assert postgres["scheme"] == "postgresql+psycopg2"


def test_the_production_instance_is_valid_dagster_configuration(tmp_path):
    shutil.copy(PROD, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises on anything Dagster does not accept
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    runs = config["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] > 0
    per_backfill = [limit for limit in runs["tag_concurrency_limits"] if limit["key"] == "dagster/backfill"]
    assert per_backfill == [{"key": "dagster/backfill", "value": {"applyLimitPerUniqueValue": True}, "limit": 4}]
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}


def declared_pools() -> set[str]:
    return {pool for asset in defs.resolve_asset_graph().assets_defs for pool in asset.node_def.pools}


def test_every_pool_the_assets_declare_is_documented_where_operators_set_it():
    pools = declared_pools()
    assert {"warehouse", "search_index", "enrichment_api"} <= pools
    documented = {
        "deploy/dagster.prod.yaml": set(re.findall(r"^\s*#\s+(\w+)\s{2,}", PROD.read_text(), re.M)),
        "docs/DEPLOYMENT.md": set(re.findall(r"^\| `(\w+)` \|", (ROOT / "docs/DEPLOYMENT.md").read_text(), re.M)),
    }
    for where, names in documented.items():
        assert pools <= names, f"{where} does not describe the pools {sorted(pools - names)}"


def test_the_helm_values_set_what_the_production_instance_sets():
    """deploy/helm/values.yaml (the Kubernetes route) renders the same dagster.yaml limits."""
    prod = yaml.safe_load(PROD.read_text())
    helm = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
    runs, pools = prod["concurrency"]["runs"], prod["concurrency"]["pools"]
    assert helm["concurrency"]["runs"] == {
        "maxConcurrentRuns": runs["max_concurrent_runs"], "tagConcurrencyLimits": runs["tag_concurrency_limits"],
    }
    assert helm["concurrency"]["pools"] == {"defaultLimit": pools["default_limit"], "granularity": pools["granularity"]}
    assert helm["postgresql"]["postgresqlScheme"] == prod["storage"]["postgres"]["postgres_db"]["scheme"]
    daemon, retries, monitoring = helm["dagsterDaemon"], prod["run_retries"], prod["run_monitoring"]
    assert daemon["runRetries"] == {
        "enabled": retries["enabled"], "maxRetries": retries["max_retries"],
        "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"],
    }
    assert daemon["runMonitoring"] == {
        "enabled": monitoring["enabled"], "startTimeoutSeconds": monitoring["start_timeout_seconds"],
        "cancelTimeoutSeconds": monitoring["cancel_timeout_seconds"],
        "freeSlotsAfterRunEndSeconds": monitoring["free_slots_after_run_end_seconds"],
    }
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "orchestration.definitions"]
    assert {"name": "DAGSTER_DEPLOYMENT", "value": "prod"} in deployment["env"]
