"""Install the DuckDB extensions the BigQuery emulator loads, from their pip packages.

Run by `make` with the emulator's own Python (3.13). DuckDB would otherwise download them
at first use, and nothing outside the package registries can be reached here. They go into
the DuckDB home the emulator is started with (HOME=<home>), so nothing lands in the user's.

    python local_services/emulator_extensions.py <home>
"""

import importlib
import os
import pathlib
import sys

EXTENSIONS = ("icu", "ducklake", "spatial")  # the emulator's time zones, catalog and GEOGRAPHY


def main(home: str) -> None:
    pathlib.Path(home).mkdir(parents=True, exist_ok=True)
    os.environ["HOME"] = home
    import duckdb

    with duckdb.connect() as con:
        con.execute(f"SET home_directory = '{home}'")
        for name in EXTENSIONS:
            package = pathlib.Path(importlib.import_module(f"duckdb_extension_{name}").__file__).parent
            (binary,) = package.rglob(f"{name}.duckdb_extension")
            con.execute(f"FORCE INSTALL '{binary}'")
            con.execute(f"LOAD {name}")
        print("duckdb extensions:", ", ".join(EXTENSIONS), "in", home)


if __name__ == "__main__":
    main(sys.argv[1])
