"""Settings of the enrichment pipeline's files: where inputs and outputs are, which field is
the record's ID, and the chunking. The API's settings are the `enrichment_api` resource."""

import os

import dagster as dg
from pydantic import Field

from engine.enrichment.run import FileSettings

# Input files per run of a backfill (BackfillPolicy.multi_run): fixed when the code location
# loads. Each file uses the whole rate on its own, so files in one run go one after another.
FILES_PER_RUN = int(os.environ.get("ENRICHMENT_FILES_PER_RUN", "10"))


class EnrichmentSettings(dg.ConfigurableResource):
    """Every setting has a default; `enrichment_settings_from_environment` reads overrides."""

    input_prefix: str = Field(default="enrichment/input", description="<prefix>/<path>.csv|.json|.ndjson|.jsonl|.parquet[.gz]")
    output_prefix: str = Field(default="enrichment/output", description="<prefix>/<partition key>/{enriched,dead_letters,chunks}/…")
    id_field: str = Field(default="id", description="The record field that identifies it (in dead letters and logs).")
    chunk_rows: int = Field(default=10_000, description="Records per chunk: the unit written, and skipped by a retried run.")
    max_open_chunks: int = Field(default=3, description="Chunks in memory at once.")
    keep_input_fields: bool = True
    max_dead_letter_fraction: float = Field(default=0.01, description="More dead letters than this share of a file: a warning check.")
    progress_interval_seconds: float = 5.0

    def file_settings(self) -> FileSettings:
        return FileSettings(
            id_field=self.id_field,
            chunk_rows=self.chunk_rows,
            max_open_chunks=self.max_open_chunks,
            keep_input_fields=self.keep_input_fields,
            progress_interval=self.progress_interval_seconds,
        )


ENRICHMENT_VARIABLES = {
    "input_prefix": "ENRICHMENT_INPUT_PREFIX",
    "output_prefix": "ENRICHMENT_OUTPUT_PREFIX",
    "id_field": "ENRICHMENT_ID_FIELD",
    "chunk_rows": "ENRICHMENT_CHUNK_ROWS",
    "max_dead_letter_fraction": "ENRICHMENT_MAX_DEAD_LETTER_FRACTION",
    "progress_interval_seconds": "FLOODGATE_PROGRESS_SECONDS",
}


def enrichment_settings_from_environment() -> EnrichmentSettings:
    overrides = {s: os.environ[v] for s, v in ENRICHMENT_VARIABLES.items() if v in os.environ}
    try:
        return EnrichmentSettings(**overrides)
    except ValueError as exc:
        names = ", ".join(f"{ENRICHMENT_VARIABLES[k]}={v!r}" for k, v in overrides.items())
        raise ValueError(f"invalid enrichment setting from the environment ({names}): {exc}") from None
