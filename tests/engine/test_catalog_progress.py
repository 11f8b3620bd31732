"""The upload's progress key in a real Redis (issue 5, item 5): written per batch, expiring,
and a Redis that cannot be reached costs a warning, never the upload."""

import logging
import os
import uuid

import pytest

from conftest import require_service
from engine.catalog.progress import RedisProgress

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service(f"Redis is not reachable ({type(exc).__name__}): start redis-server or set REDIS_URL")
    yield client
    client.close()


def test_progress_is_a_hash_per_upload_that_expires(redis_client):
    prefix = f"test:catalog:{uuid.uuid4().hex}:"
    board = RedisProgress(REDIS_URL, "m1/products.csv@e1", "abc", prefix=prefix, ttl_seconds=600)
    try:
        board.publish("importing", rows=1000, bytes=5000, total_bytes=20000, rows_per_second=250.0, eta_seconds=12.0)
        first = {k.decode(): v.decode() for k, v in redis_client.hgetall(prefix + "abc").items()}
        assert first["state"] == "importing" and first["rows"] == "1000" and first["eta_seconds"] == "12.0"
        assert first["upload"] == "m1/products.csv@e1" and first["updated_at"]
        assert 0 < redis_client.ttl(prefix + "abc") <= 600
        board.publish("completed", rows=4000, inserted=4000, updated=0, unchanged=0, rejected=0, eta_seconds=None)
        last = {k.decode(): v.decode() for k, v in redis_client.hgetall(prefix + "abc").items()}
        assert last["state"] == "completed" and last["inserted"] == "4000" and last["eta_seconds"] == ""
    finally:
        redis_client.delete(prefix + "abc")
        board.close()


def test_an_unreachable_redis_warns_once_and_does_not_raise(caplog):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = logging.getLogger("test.catalog.progress")
    board = RedisProgress(f"redis://:hunter2@127.0.0.1:{port}/0", "u", "id", log=log)
    with caplog.at_level(logging.WARNING, logger="test.catalog.progress"):
        board.publish("importing", rows=1)
        board.publish("importing", rows=2)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "the upload goes on" in warnings[0] and "hunter2" not in warnings[0]
