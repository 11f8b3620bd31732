"""LocalDirectoryObjectStore: atomic writes, stat/etag, listing, deletes and key confinement."""

import os
from pathlib import Path

import pytest

from resources.object_store import LocalDirectoryObjectStore, ObjectInfo


@pytest.fixture
def store(tmp_path: Path) -> LocalDirectoryObjectStore:
    return LocalDirectoryObjectStore(root=str(tmp_path / "store"))


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".partial")]


def write(store: LocalDirectoryObjectStore, key: str, data: bytes) -> None:
    with store.open_write(key) as f:
        f.write(data)


def read(store: LocalDirectoryObjectStore, key: str) -> bytes:
    with store.open_read(key) as f:
        return f.read()


def test_write_then_read_back(store):
    data = bytes(range(256)) * 1000
    write(store, "search_terms/2024-01-07/parsed.parquet", data)
    assert read(store, "search_terms/2024-01-07/parsed.parquet") == data
    assert store.exists("search_terms/2024-01-07/parsed.parquet")
    assert not store.exists("search_terms/2024-01-07/top3.parquet")


def test_read_of_a_missing_object_raises(store):
    with pytest.raises(FileNotFoundError):
        with store.open_read("nothing/here"):
            pass


def test_object_is_invisible_until_the_block_exits(store):
    with store.open_write("a/b.bin") as f:
        f.write(b"half")
        assert not store.exists("a/b.bin")
        assert [i.key for i in store.list("")] == []
    assert read(store, "a/b.bin") == b"half"


def test_exception_inside_open_write_publishes_nothing(store):
    with pytest.raises(RuntimeError, match="boom"):
        with store.open_write("a/new.bin") as f:
            f.write(b"some bytes")
            raise RuntimeError("boom")
    assert store.stat("a/new.bin") is None
    assert not store.exists("a/new.bin")
    assert partials(Path(store.root)) == []


def test_exception_inside_open_write_keeps_the_old_object(store):
    write(store, "a/old.bin", b"old content")
    before = store.stat("a/old.bin")
    with pytest.raises(KeyboardInterrupt):  # BaseException too
        with store.open_write("a/old.bin") as f:
            f.write(b"new content that must not land")
            raise KeyboardInterrupt
    assert read(store, "a/old.bin") == b"old content"
    assert store.stat("a/old.bin") == before
    assert partials(Path(store.root)) == []


def test_stat_size_and_etag(store):
    assert store.stat("k/x") is None
    write(store, "k/x", b"12345")
    first = store.stat("k/x")
    assert isinstance(first, ObjectInfo)
    assert first.key == "k/x"
    assert first.size == 5
    assert first.last_modified.tzinfo is not None
    assert store.stat("k/x").etag == first.etag  # stable while unchanged

    write(store, "k/x", b"a longer content")
    second = store.stat("k/x")
    assert second.size == len(b"a longer content")
    assert second.etag != first.etag


def test_etag_changes_for_same_size_replacement_with_same_mtime(store):
    write(store, "r/2024-01-07.json", b"AAAA")
    path = Path(store.uri("r/2024-01-07.json"))
    old = path.stat()
    before = store.stat("r/2024-01-07.json").etag
    write(store, "r/2024-01-07.json", b"BBBB")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # what a timestamp-preserving copy does
    assert read(store, "r/2024-01-07.json") == b"BBBB"
    assert store.stat("r/2024-01-07.json").etag != before


def test_a_prefix_directory_is_not_an_object(store):
    write(store, "search_terms/2024-01-07/parsed.parquet", b"x")
    assert store.stat("search_terms/2024-01-07") is None
    assert not store.exists("search_terms")


def test_list_returns_keys_in_order_and_skips_partials(store):
    keys = ["p/b/2.bin", "p/a.bin", "p/b/1.bin", "p/c", "q/z.bin", "pp/x.bin"]
    for i, key in enumerate(keys):
        write(store, key, b"x" * (i + 1))
    # a write in progress and an abandoned temporary file
    with store.open_write("p/inflight.bin") as f:
        f.write(b"not yet")
        assert partials(Path(store.root))
        in_progress = [i.key for i in store.list("p/")]
    (Path(store.root) / "p" / ".a.bin.abc123.partial").write_bytes(b"leftover")

    assert in_progress == ["p/a.bin", "p/b/1.bin", "p/b/2.bin", "p/c"]
    listed = list(store.list("p/"))
    assert [i.key for i in listed] == ["p/a.bin", "p/b/1.bin", "p/b/2.bin", "p/c", "p/inflight.bin"]
    assert {i.key: i.size for i in listed}["p/c"] == 4
    assert [i.key for i in store.list("p")] == ["p/a.bin", "p/b/1.bin", "p/b/2.bin", "p/c", "p/inflight.bin", "pp/x.bin"]
    assert [i.key for i in store.list("p/b/")] == ["p/b/1.bin", "p/b/2.bin"]
    assert [i.key for i in store.list("p/b/2")] == ["p/b/2.bin"]
    all_keys = [i.key for i in store.list("")]
    assert all_keys == sorted(all_keys) and len(all_keys) == 7
    assert list(store.list("missing/")) == []


def test_delete_is_idempotent(store):
    write(store, "d/x", b"1")
    write(store, "d/y", b"2")
    store.delete("d/x")
    assert store.stat("d/x") is None
    store.delete("d/x")  # already gone: no error
    store.delete("never/existed")
    assert read(store, "d/y") == b"2"


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "/tmp/elsewhere"])
def test_keys_escaping_the_root_are_refused(store, tmp_path, key):
    with pytest.raises(ValueError, match="escapes"):
        with store.open_write(key) as f:
            f.write(b"x")
    for call in (store.stat, store.uri, store.delete):
        with pytest.raises(ValueError):
            call(key)
    with pytest.raises(ValueError):
        with store.open_read(key):
            pass
    assert not (tmp_path / "x").exists()


def test_uri_points_at_the_file(store):
    write(store, "u/v/w.txt", b"hello")
    uri = store.uri("u/v/w.txt")
    assert Path(uri).is_absolute()
    assert Path(uri) == (Path(store.root) / "u" / "v" / "w.txt").resolve()
    assert Path(uri).read_bytes() == b"hello"
