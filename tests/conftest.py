"""Shared fixtures."""

import os

import pytest

# Every test process builds the native scanner into one cache: a fresh clone pays once.
os.environ.setdefault("FLOODGATE_NATIVE_CACHE", os.path.join(os.path.dirname(__file__), "..", ".floodgate", "native"))


@pytest.fixture(autouse=True)
def _no_deployment_leaks(monkeypatch):
    """Tests choose their own deployment and home; the developer's shell must not leak in."""
    for name in ("DAGSTER_DEPLOYMENT", "FLOODGATE_HOME"):
        monkeypatch.delenv(name, raising=False)


def require_service(reason: str) -> None:
    """Under CI=true a missing service fails the test; elsewhere it skips, saying how to get it."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's server) on a loopback port, for the whole test session."""
    from local_services.s3_server import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def bigquery_endpoint(tmp_path_factory):
    """The BigQuery API (the local-bigquery emulator, from .venv-bigquery) on a loopback port."""
    from local_services.bigquery_emulator import EmulatorUnavailable, bigquery_emulator, emulator_command

    try:
        emulator_command()
    except EmulatorUnavailable as exc:
        require_service(str(exc))
    with bigquery_emulator(tmp_path_factory.mktemp("bigquery")) as endpoint:
        yield endpoint
