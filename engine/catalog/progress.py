"""Progress of an upload where an external page can poll it: one Redis hash per upload.

Key `<prefix><upload id>` (engine.catalog.uploads.upload_id; the prefix defaults to
`floodgate:catalog:upload:`), fields: state, rows, bytes, total_bytes, rows_per_second,
eta_seconds, upload (the partition key), updated_at (ISO UTC), and at the end inserted,
updated, unchanged, rejected or reason. States: importing (reading, validating and
staging, once per batch, never per row), applying (the file is read; the database applies
it), then completed, validated (catalog_validated_rows materialized alone) or failed (also
written by the run-failure sensor for a run that died). It expires `ttl_seconds` after its
last write. A Redis that is down costs a warning in the run log, never the upload.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

DEFAULT_PREFIX = "floodgate:catalog:upload:"


class RedisProgress:
    def __init__(self, url: str, upload: str, upload_id: str, *, prefix: str = DEFAULT_PREFIX,
                 ttl_seconds: int = 7 * 24 * 3600, log: logging.Logger | None = None):
        import redis

        self.key = f"{prefix}{upload_id}"
        self.upload = upload
        self.ttl_seconds = ttl_seconds
        self.log = log
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._failed = False

    def publish(self, state: str, **fields) -> None:
        if self._failed:
            return  # one warning per upload is enough; the upload goes on without the board
        mapping = {"state": state, "upload": self.upload, "updated_at": datetime.now(timezone.utc).isoformat()}
        mapping.update({k: ("" if v is None else v) for k, v in fields.items()})
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self.key, mapping=mapping)
                pipe.expire(self.key, self.ttl_seconds)
                pipe.execute()
        except Exception as exc:  # noqa: BLE001 - any Redis failure: warn, carry on
            self._failed = True
            if self.log is not None:
                self.log.warning(f"progress key {self.key} not written (Redis: {type(exc).__name__}); the upload goes on")

    def close(self) -> None:
        self._client.close()
