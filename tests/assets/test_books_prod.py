"""The books pipeline with the production resources against real local servers: texts in S3
(moto), summaries and embeddings from the Bedrock runtime API (a local server speaking its
wire format, throttling some requests), documents in OpenSearch (a local server speaking
_bulk, answering some items with 429)."""

import uuid

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

import orchestration.deployment as deployment
from assets import books as books_assets
from engine.books.sample_books import generate
from local_services.bedrock_server import bedrock_server
from local_services.opensearch_server import opensearch_server
from local_services.s3_server import TEST_CREDENTIALS, create_bucket
from orchestration.books_sensor import books_partitions_sensor
from partitions.books import books
from resources.s3_object_store import S3ObjectStore

BOOKS = 12
SUMMARY_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
EMBEDDING_MODEL = "amazon.titan-embed-text-v2:0"


def test_books_through_s3_bedrock_and_opensearch_and_a_second_run_calls_no_model(monkeypatch, s3_endpoint, tmp_path):
    bucket = f"books-{uuid.uuid4().hex[:8]}"
    create_bucket(s3_endpoint, bucket)
    store = S3ObjectStore(bucket=bucket, endpoint_url=s3_endpoint, **TEST_CREDENTIALS)
    for book, text in generate(BOOKS, words=400, seed=5):
        with store.open_write(f"books/texts/{book.book_id}.txt") as f:
            f.write(text.encode())
        with store.open_write(f"books/texts/{book.book_id}.json") as f:
            f.write(f'{{"title": "{book.title}", "author": "{book.author}"}}'.encode())

    with bedrock_server(throttle_fraction=0.2) as bedrock, opensearch_server(item_429_fraction=0.2) as search:
        environment = {
            "DAGSTER_DEPLOYMENT": "prod",
            "FLOODGATE_HOME": str(tmp_path / "home"),
            "FLOODGATE_S3_BUCKET": bucket,
            "FLOODGATE_S3_ENDPOINT_URL": s3_endpoint,
            "AWS_REGION": TEST_CREDENTIALS["region_name"],
            "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS["aws_secret_access_key"],
            "FLOODGATE_BIGQUERY_PROJECT": "unused",
            "FLOODGATE_BIGQUERY_DATASET": "unused",
            "FLOODGATE_BEDROCK_ENDPOINT_URL": bedrock.url,
            "FLOODGATE_BEDROCK_SUMMARY_MODEL": SUMMARY_MODEL,
            "FLOODGATE_BEDROCK_EMBEDDING_MODEL": EMBEDDING_MODEL,
            "FLOODGATE_BEDROCK_EMBEDDING_DIMENSIONS": "256",
            "OPENSEARCH_URL": search.url,
            "FLOODGATE_OPENSEARCH_INDEX": "books-test",
            "BOOKS_WORKERS": "2",
            "FLOODGATE_PROGRESS_SECONDS": "60",
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        resources = deployment.resources()
        instance = dg.DagsterInstance.ephemeral()

        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            (request,) = books_partitions_sensor(context).dynamic_partitions_requests
        instance.add_dynamic_partitions(books.name, list(request.partition_keys))
        keys = instance.get_dynamic_partitions(books.name)
        assert len(keys) == BOOKS

        job = dg.Definitions.merge(books_assets.defs, dg.Definitions(resources=resources)).resolve_job_def("books")
        tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
        assert job.execute_in_process(instance=instance, tags=tags).success

        calls = dict(bedrock.stats.requests)
        assert calls[("converse", SUMMARY_MODEL)] >= BOOKS  # throttled attempts are retried
        assert calls[("invoke", EMBEDDING_MODEL)] >= BOOKS
        documents = search.documents("books-test")
        assert sorted(documents) == sorted(keys)  # every book, despite item-level 429s
        assert all(len(d["embedding"]) == 256 and d["summary"] for d in documents.values())
        assert {d["title"] for d in documents.values()} == {b.title for b, _ in generate(BOOKS, words=400, seed=5)}
        assert search.settings("books-test").get("refresh_interval") != "-1"  # restored after the load

        # the same books again: no model call at all
        assert job.execute_in_process(instance=instance, tags=tags).success
        assert dict(bedrock.stats.requests) == calls
        assert sorted(search.documents("books-test")) == sorted(keys)
