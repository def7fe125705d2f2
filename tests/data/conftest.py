"""Helpers for the data-layer tests: snapshot the real store, write CSV files.

The CLI runner is the root ``qcli`` fixture (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest


def snapshot(home: Path) -> dict[str, list[tuple]] | None:
    """Every row of ``bars`` and ``ingests`` (sorted), or None if there is no store file."""
    path = home / "offline.duckdb"
    if not path.exists():
        return None
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return {
            "bars": con.execute("SELECT * FROM bars ORDER BY symbol, ts").fetchall(),
            "ingests": con.execute("SELECT * FROM ingests ORDER BY ingest_id").fetchall(),
        }
    finally:
        con.close()


def file_digest(home: Path) -> dict[str, str]:
    """sha256 of every file of the store (the DuckDB file and its WAL, if any): byte equality."""
    import hashlib

    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.glob("offline.duckdb*"))
    }


def stored_bars(home: Path) -> pl.DataFrame:
    con = duckdb.connect(str(home / "offline.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return pl.from_arrow(con.sql("SELECT * FROM bars ORDER BY symbol, ts").to_arrow_table())
    finally:
        con.close()


@pytest.fixture
def write_csv(tmp_path: Path):
    """Write CSV text to a file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return _write
