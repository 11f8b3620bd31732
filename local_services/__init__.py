"""Local stand-ins for the production services, for tests, benchmarks and trying prod mode
on one machine: an S3 API (moto) and the BigQuery API (the local-bigquery emulator)."""
