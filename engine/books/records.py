"""Per-book results in the object store, under deterministic keys:

    <results prefix>/<book id>/book.json       what the text was (hash, size, metadata)
    <results prefix>/<book id>/summary.json    the summary, and the hash and model it came from
    <results prefix>/<book id>/embedding.json  the embedding, and the summary and model it came from

A stage skips a book whose result already names the same input hash and the same model
and version: a retried batch redoes only the books without results, and an unchanged book
never costs a model call twice.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.books.source import check_book_id

if TYPE_CHECKING:  # the engine takes any object store; it does not import Dagster
    from resources.object_store import ObjectStore


def result_key(prefix: str, book: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{check_book_id(book)}/{name}.json"


def read_record(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        with store.open_read(key) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # a damaged record is as good as none: the stage redoes the book


def write_record(store: ObjectStore, key: str, record: dict[str, Any]) -> None:
    with store.open_write(key) as f:
        f.write(json.dumps(record, ensure_ascii=False, sort_keys=True).encode())


def encode_vector(vector: np.ndarray) -> str:
    """float32 bytes in base64: exact, and a quarter of the size of a JSON list of floats."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode()


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").copy()
