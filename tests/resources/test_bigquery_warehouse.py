"""BigQueryWarehouse against the BigQuery API: the local-bigquery emulator on a loopback port,
reached by the official client over HTTP. The emulator has no table decorators, so the
partition_decorator method is tested in test_bigquery_warehouse_real.py, against BigQuery."""

import io
import uuid
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources.bigquery_warehouse import BigQueryClientResource, BigQueryWarehouse, bigquery_schema

W1, W2 = date(2024, 1, 7), date(2024, 1, 14)
TABLE = "top3"
SCHEMA = pa.schema(
    [
        pa.field("week_start", pa.date32(), nullable=False),
        pa.field("department_name", pa.string(), nullable=False),
        pa.field("search_term", pa.string(), nullable=False),
        pa.field("share", pa.float64()),
    ]
)


def parquet(weeks: list, terms: list[str], shares: list | None = None, schema: pa.Schema = SCHEMA) -> io.BytesIO:
    shares = shares if shares is not None else [0.5] * len(terms)
    table = pa.table(
        {"week_start": pa.array(weeks, pa.date32()), "department_name": ["Books"] * len(terms), "search_term": terms, "share": shares},
        schema=schema,
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    buf.seek(0)
    return buf


def week_file(week: date, terms: list[str]) -> io.BytesIO:
    return parquet([week] * len(terms), terms)


@pytest.fixture
def wh(bigquery_endpoint) -> BigQueryWarehouse:
    client = BigQueryClientResource(project="local", api_endpoint=bigquery_endpoint, anonymous=True)
    return BigQueryWarehouse(bigquery=client, dataset=f"test_{uuid.uuid4().hex[:12]}")


def load(wh: BigQueryWarehouse, week: date, source: io.BytesIO) -> int:
    return wh.replace_partition(TABLE, "week_start", week, source, schema=SCHEMA, cluster_by=("department_name", "search_term"))


def rows_by_week(wh: BigQueryWarehouse) -> dict[date, list[str]]:
    out: dict[date, list[str]] = {}
    for week, term in wh.query(f"SELECT week_start, search_term FROM {wh.table_ref(TABLE)} ORDER BY 1, 2"):
        out.setdefault(week, []).append(term)
    return out


def test_the_first_load_creates_dataset_and_table_with_schema_partitions_and_clustering(wh):
    assert load(wh, W1, week_file(W1, ["a", "b", "c"])) == 3
    with wh.bigquery.get_client() as client:
        table = client.get_table(f"local.{wh.dataset}.{TABLE}")
    assert [(f.name, f.field_type, f.mode) for f in table.schema] == [
        ("week_start", "DATE", "REQUIRED"),
        ("department_name", "STRING", "REQUIRED"),
        ("search_term", "STRING", "REQUIRED"),
        ("share", "FLOAT", "NULLABLE"),
    ]
    assert table.time_partitioning.field == "week_start" and table.time_partitioning.type_ == "DAY"
    assert table.clustering_fields == ["department_name", "search_term"]
    assert rows_by_week(wh) == {W1: ["a", "b", "c"]}


def test_reloading_a_week_replaces_it_and_leaves_other_weeks_untouched(wh):
    load(wh, W1, week_file(W1, ["a", "b", "c"]))
    load(wh, W2, week_file(W2, ["x", "y"]))
    assert load(wh, W1, week_file(W1, ["a", "b", "c"])) == 3  # the same file again: no duplicates
    assert rows_by_week(wh) == {W1: ["a", "b", "c"], W2: ["x", "y"]}
    assert load(wh, W1, week_file(W1, ["n1", "n2", "n3", "n4"])) == 4
    assert rows_by_week(wh) == {W1: ["n1", "n2", "n3", "n4"], W2: ["x", "y"]}
    assert load(wh, W2, week_file(W2, [])) == 0  # an empty week empties it
    assert rows_by_week(wh) == {W1: ["n1", "n2", "n3", "n4"]}


def test_a_load_with_rows_of_another_week_changes_nothing_and_leaves_no_staging_table(wh):
    load(wh, W1, week_file(W1, ["keep1", "keep2"]))
    with pytest.raises(ValueError, match="1 rows of the load"):
        load(wh, W1, parquet([W1, W2, W1], ["p", "q", "r"]))
    assert rows_by_week(wh) == {W1: ["keep1", "keep2"]}
    with wh.bigquery.get_client() as client:
        assert [t.table_id for t in client.list_tables(wh.dataset)] == [TABLE]


def test_a_file_that_does_not_fit_the_schema_fails_the_load_and_keeps_the_week(wh):
    load(wh, W1, week_file(W1, ["keep"]))
    wrong = pa.schema([pa.field("week_start", pa.date32()), pa.field("search_term", pa.string())])
    buf = io.BytesIO()
    pq.write_table(pa.table({"week_start": pa.array([W1], pa.date32()), "search_term": ["x"]}, schema=wrong), buf)
    buf.seek(0)
    with pytest.raises(Exception):
        load(wh, W1, buf)
    assert rows_by_week(wh) == {W1: ["keep"]}


def test_partition_profile_counts_and_ranges_one_week(wh):
    load(wh, W1, parquet([W1] * 4, ["a", "b", "c", "d"], shares=[0.25, None, 0.75, 0.5]))
    load(wh, W2, parquet([W2], ["x"], shares=[0.9]))
    profile = wh.partition_profile(TABLE, "week_start", W1, ["share"])
    assert (profile.rows, profile.minimum, profile.maximum) == (4, {"share": 0.25}, {"share": 0.75})
    empty = wh.partition_profile(TABLE, "week_start", date(2024, 1, 21), ["share"])
    assert (empty.rows, empty.minimum) == (0, {"share": None})
    missing = wh.partition_profile("no_such_table", "week_start", W1, ["share"])
    assert missing.rows == 0


def test_query_takes_typed_positional_parameters(wh):
    load(wh, W1, week_file(W1, ["a", "b", "c"]))
    load(wh, W2, week_file(W2, ["x", "y"]))
    assert wh.query(f"SELECT COUNT(*) FROM {wh.table_ref(TABLE)} WHERE week_start = ?", [W2]) == [(2,)]
    assert wh.query(f"SELECT search_term FROM {wh.table_ref(TABLE)} WHERE week_start = ? AND search_term > ? AND share = ? ORDER BY 1", [W1, "a", 0.5]) == [
        ("b",),
        ("c",),
    ]
    assert wh.table_ref(TABLE) == f"`local.{wh.dataset}.{TABLE}`"


def test_identifiers_are_checked_before_any_request(wh):
    for bad in ("top3; DROP TABLE x", "a-b", ""):
        with pytest.raises(ValueError, match="identifier"):
            wh.replace_partition(bad, "week_start", W1, week_file(W1, ["a"]))


def test_arrow_types_map_to_bigquery_types():
    schema = pa.schema(
        [
            pa.field("d", pa.date32(), nullable=False),
            pa.field("i", pa.int32()),
            pa.field("f", pa.float32()),
            pa.field("b", pa.bool_()),
            pa.field("t", pa.timestamp("us", tz="UTC")),
        ]
    )
    assert [(f.name, f.field_type, f.mode) for f in bigquery_schema(schema)] == [
        ("d", "DATE", "REQUIRED"),
        ("i", "INT64", "NULLABLE"),
        ("f", "FLOAT64", "NULLABLE"),
        ("b", "BOOL", "NULLABLE"),
        ("t", "TIMESTAMP", "NULLABLE"),
    ]
    with pytest.raises(ValueError, match="no BigQuery type"):
        bigquery_schema(pa.schema([pa.field("l", pa.list_(pa.int64()))]))


def _service_account_key(email: str) -> str:
    """A service-account JSON key as gcp_credentials takes it (base64), with a fresh RSA key."""
    import base64
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = {
        "type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": pem.decode(),
        "client_email": email, "client_id": "1", "token_uri": "https://oauth2.example.invalid/token",
    }
    return base64.b64encode(json.dumps(info).encode()).decode()


def test_a_base64_service_account_key_becomes_the_clients_credentials():
    resource = BigQueryClientResource(project="p", gcp_credentials=_service_account_key("loader@p.iam.example"))
    with resource.get_client() as client:
        assert client._credentials.service_account_email == "loader@p.iam.example"
        assert client.project == "p"


def test_a_malformed_key_is_refused_without_its_text_in_the_error():
    secret = "bm90LWpzb24tYnV0LXNlY3JldA=="  # base64 of something that is not JSON
    with pytest.raises(ValueError) as refused:
        with BigQueryClientResource(project="p", gcp_credentials=secret).get_client():
            pass
    assert "service-account JSON key" in str(refused.value)
    assert secret not in str(refused.value) and "secret" not in str(refused.value)
