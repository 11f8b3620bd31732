"""One dynamic partition per book; the key is the book's ID (engine/books/source.py)."""

import dagster as dg

books = dg.DynamicPartitionsDefinition(name="books")
