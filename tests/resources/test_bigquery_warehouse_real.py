"""BigQueryWarehouse against real BigQuery, for what the emulator cannot show: a
partition-decorator WRITE_TRUNCATE load (local-bigquery 0.3.2 has no table decorators).

Runs when FLOODGATE_TEST_BIGQUERY_PROJECT names a project the environment's credentials
(GOOGLE_APPLICATION_CREDENTIALS or gcloud's default) may create datasets and run jobs in;
each test makes a dataset of its own and deletes it. Skipped otherwise, CI included: it
needs a cloud account, not a service this machine can run."""

import os
import uuid

import pytest

from resources.bigquery_warehouse import BigQueryClientResource, BigQueryWarehouse
from tests.resources.test_bigquery_warehouse import SCHEMA, W1, W2, parquet, week_file

PROJECT = os.environ.get("FLOODGATE_TEST_BIGQUERY_PROJECT")
pytestmark = pytest.mark.skipif(not PROJECT, reason="set FLOODGATE_TEST_BIGQUERY_PROJECT to run against real BigQuery")


@pytest.fixture(params=["partition_decorator", "transaction"])
def real(request):
    dataset = f"floodgate_test_{uuid.uuid4().hex[:10]}"
    wh = BigQueryWarehouse(
        bigquery=BigQueryClientResource(project=PROJECT, location=os.environ.get("FLOODGATE_TEST_BIGQUERY_LOCATION", "US")),
        dataset=dataset,
        replace_method=request.param,
    )
    yield wh
    with wh.bigquery.get_client() as client:
        client.delete_dataset(f"{PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)


def terms_by_week(wh):
    out = {}
    for week, term in wh.query(f"SELECT week_start, search_term FROM {wh.table_ref('top3')} ORDER BY 1, 2"):
        out.setdefault(week, []).append(term)
    return out


def test_a_week_is_replaced_alone(real):
    load = lambda week, f: real.replace_partition("top3", "week_start", week, f, schema=SCHEMA, cluster_by=("department_name",))  # noqa: E731
    assert load(W1, week_file(W1, ["a", "b", "c"])) == 3
    assert load(W2, week_file(W2, ["x", "y"])) == 2
    assert load(W1, week_file(W1, ["n1", "n2"])) == 2
    assert terms_by_week(real) == {W1: ["n1", "n2"], W2: ["x", "y"]}


def test_rows_of_another_week_are_refused_and_the_week_kept(real):
    real.replace_partition("top3", "week_start", W1, week_file(W1, ["keep"]), schema=SCHEMA)
    with pytest.raises(Exception):  # BigQuery refuses rows outside the decorated partition
        real.replace_partition("top3", "week_start", W1, parquet([W1, W2], ["p", "q"]), schema=SCHEMA)
    assert terms_by_week(real) == {W1: ["keep"]}
