"""Settings of the product catalog pipeline and the object keys it reads and writes."""

import dagster as dg
from pydantic import Field

from engine.catalog.progress import RedisProgress
from engine.catalog.uploads import parse_upload_partition_key, upload_id
from engine.catalog.validated_file import ReadOptions
from engine.catalog.validated_rows import Compression


class CatalogSettings(dg.ConfigurableResource):
    """Every setting has a default; orchestration/deployment.py reads overrides from the environment."""

    uploads_prefix: str = "catalog/uploads"  # merchants' files: <prefix>/<path>.csv[.gz] | .tsv | .txt | .xlsx
    results_prefix: str = "catalog/results"  # <prefix>/<partition key>/{validated.arrow,rejects.csv,summary.json,applied.json}
    # webhooks not delivered after their retries, kept until they are: <prefix>/<upload id>.<event>.json
    outbox_prefix: str = "catalog/webhooks/undelivered"
    # how long the redelivery sensor keeps sending a parked webhook (webhook senders
    # commonly give up after about three days); after that it is moved, not deleted, to
    # <expired_webhooks_prefix>/ and the sensor logs an error. 0: never give up
    webhook_redelivery_hours: float = Field(default=72.0, ge=0)
    expired_webhooks_prefix: str = "catalog/webhooks/expired"
    max_reject_fraction: float = 0.01  # more rejected rows than this: the upload fails, nothing applied
    encoding: str | None = None  # None: detected (UTF-8 with or without BOM, Windows-1252/Latin-1)
    delimiter: str | None = None  # None: sniffed among comma, semicolon, tab
    sheet: str | None = None  # .xlsx: None reads the first sheet
    # CSV bytes per read block: pyarrow's reader reads 32 blocks ahead, and a record longer
    # than a block sends the file to the slower exact reader (engine/catalog/csv_reader.py)
    block_mb: float = 0.125
    validated_compression: Compression = "none"  # of the validated rows' Arrow IPC file
    progress_interval_seconds: float = 0.0  # 0: a line per batch
    settle_seconds: float = 5.0  # the sensor leaves an object younger than this for the next tick
    # where an external page polls progress (engine/catalog/progress.py); a URL may hold a
    # password, so production sets it from dg.EnvVar("REDIS_URL")
    redis_url: str | None = None
    progress_key_prefix: str = "floodgate:catalog:upload:"
    progress_ttl_seconds: int = 7 * 24 * 3600

    def read_options(self) -> ReadOptions:
        return ReadOptions(
            encoding=self.encoding, delimiter=self.delimiter, sheet=self.sheet, block_mb=self.block_mb,
            validated_compression=self.validated_compression,
        )

    def progress_board(self, partition_key: str, log) -> RedisProgress | None:
        """The upload's Redis progress key (engine/catalog/progress.py), or None without a Redis URL."""
        if not self.redis_url:
            return None
        return RedisProgress(self.redis_url, partition_key, upload_id(partition_key), prefix=self.progress_key_prefix,
                             ttl_seconds=self.progress_ttl_seconds, log=log)

    def upload_object(self, partition_key: str) -> tuple[str, str]:
        """(object key, ETag) the partition was made for."""
        return parse_upload_partition_key(partition_key, self.uploads_prefix)

    def result_key(self, partition_key: str, name: str) -> str:
        return f"{self.results_prefix.rstrip('/')}/{partition_key}/{name}"
