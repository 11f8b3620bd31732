"""The enrichment API server (local_services/enrichment_api_server.py) as pytest fixtures,
for the engine's tests and the Dagster assets' tests alike. A test module that needs it
imports both names: `from enrichment_api_fixtures import api, server`.

- `server`: one server in a process of its own per test module (its own GIL, as the
  benchmark runs it), stopped when the module is done;
- `api`: that server reset for one test: the default config, and every counter at zero.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest

from local_services.enrichment_api_server import ServerConfig, api_server_process


@pytest.fixture(scope="module")
def server():
    with api_server_process(ServerConfig()) as handle:
        yield handle


@pytest.fixture
def api(server):
    """The server, reset to a clean config and zero counts for this test."""
    server.configure(**asdict(ServerConfig()))
    server.reset()
    return server
