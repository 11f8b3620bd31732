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
