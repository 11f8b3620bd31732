"""Upload partition keys: object key + ETag, stable, reversible, safe as Dagster partition keys."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.catalog.uploads import parse_upload_partition_key, upload_id, upload_partition_key

PREFIX = "catalog/uploads"


@pytest.mark.parametrize(
    "key, etag, expected",
    [
        ("catalog/uploads/m1/products.csv", "abc123", "m1/products.csv@abc123"),
        ("catalog/uploads/m1/spring, 2024.xlsx", "9f-2", "m1/spring%2C%202024.xlsx@9f-2"),
        ("catalog/uploads/a..b.csv.gz", "e", "a%2E.b.csv.gz@e"),
        ("catalog/uploads/café.tsv", '"d41d8cd98f00b204e9800998ecf8427e-3"', "caf%C3%A9.tsv@%22d41d8cd98f00b204e9800998ecf8427e-3%22"),
        ("catalog/uploads/notes.pdf", "e", None),
        ("catalog/uploads//0.csv", "0", "%2F0.csv@0"),  # found by hypothesis: an empty first segment
        ("catalog/uploads/.hidden.csv", "e", None),
        ("catalog/other/products.csv", "e", None),
    ],
)
def test_partition_keys(key, etag, expected):
    assert upload_partition_key(key, etag, PREFIX) == expected
    assert upload_partition_key(key, etag, PREFIX + "/") == expected
    if expected is not None:
        assert parse_upload_partition_key(expected, PREFIX) == (key, etag)


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s), st.text(min_size=1, max_size=20))
def test_keys_round_trip_and_never_hold_what_dagster_reserves(path, etag):
    key = f"{PREFIX}/{path.replace('..', '.')}.csv"
    partition = upload_partition_key(key, etag, PREFIX)
    if partition is None:  # a hidden file's name
        return
    assert "," not in partition and "..." not in partition and "[" not in partition and "]" not in partition
    assert parse_upload_partition_key(partition, PREFIX) == (key, etag)


def test_a_replaced_file_is_a_new_upload_and_ids_are_stable():
    first = upload_partition_key(f"{PREFIX}/a.csv", "e1", PREFIX)
    second = upload_partition_key(f"{PREFIX}/a.csv", "e2", PREFIX)
    assert first != second and upload_id(first) != upload_id(second) and upload_id(first) == upload_id(first)


@pytest.mark.parametrize("bad", ["no-etag", "a/../b.csv@e", "a,b.csv@e", "/abs.csv@e"])
def test_what_is_not_a_partition_key_is_refused(bad):
    with pytest.raises(ValueError):
        parse_upload_partition_key(bad, PREFIX)
