"""The product catalog engine: uploaded CSV / Excel files → validated rows → one upsert.

Plain Python, no Dagster:

- `uploads`: the partition key of an upload (object key + ETag) and back;
- `text_stream`: gzip and encoding detection (UTF-8 with or without BOM, Windows-1252,
  Latin-1), delimiter sniffing;
- `csv_reader`, `xlsx_reader`: the file as batches of raw string columns, in bounded memory;
- `columns`: header matching with aliases; `validate`: raw batches → typed rows + rejects;
- `validated_file`: the whole validation step (validated rows, rejects CSV, summary);
  `validated_rows`: the validated rows' Arrow IPC file;
- `migrations`, `postgres_store`, `sqlite_store`: the products table and the upsert;
- `webhook`, `progress`: what the merchant's side hears.
"""
