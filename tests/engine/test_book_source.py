"""Book IDs from object keys: stable, reversible, safe as Dagster partition keys."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.books.source import book_id, check_book_id, sidecar_key, text_keys

PREFIX = "books/texts"


@pytest.mark.parametrize(
    "key, expected",
    [
        ("books/texts/moby-dick.txt", "moby-dick"),
        ("books/texts/moby-dick.txt.gz", "moby-dick"),
        ("books/texts/fiction/melville/moby dick.txt", "fiction/melville/moby%20dick"),
        ("books/texts/war, and peace.txt", "war%2C%20and%20peace"),
        ("books/texts/café.txt", "caf%C3%A9"),
        ("books/texts/moby-dick.json", None),  # a sidecar, not a text
        ("books/texts/.txt", None),
        ("books/other/moby-dick.txt", None),
        ("books/textsX/moby-dick.txt", None),
    ],
)
def test_book_id(key, expected):
    assert book_id(key, PREFIX) == expected
    assert book_id(key, PREFIX + "/") == expected


@given(st.text(min_size=1, max_size=40).filter(lambda s: not s.startswith("/") and ".." not in s.split("/")))
def test_ids_are_partition_safe_and_lead_back_to_the_key(path):
    key = f"{PREFIX}/{path}.txt"
    book = book_id(key, PREFIX)
    assert book is not None and "," not in book and check_book_id(book) == book
    assert key in text_keys(book, PREFIX)
    assert sidecar_key(book, PREFIX) == f"{PREFIX}/{path}.json"


@pytest.mark.parametrize("bad", ["a,b", "../x", "/abs", "", "x y"])
def test_check_book_id_refuses_unsafe_ids(bad):
    with pytest.raises(ValueError):
        check_book_id(bad)
