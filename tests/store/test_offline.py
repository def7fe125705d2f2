"""OfflineStore: transactions, schema, read-only opens, UTC session, busy store across processes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from quantcli.errors import NotFoundError, StoreBusyError
from quantcli.store.offline import OfflineStore

ROW = ("AAA", datetime(2020, 1, 2, tzinfo=UTC), 1.0, 2.0, 0.5, 1.5, 10.0)


def _count(store: OfflineStore) -> int:
    return store.con.execute("SELECT count(*) FROM bars").fetchone()[0]


def test_new_store_has_the_core_schema(qcli_home):
    with OfflineStore() as store:
        assert store.path == qcli_home / "offline.duckdb"
        assert store.table_exists("bars") and store.table_exists("ingests")
        store.ensure_schema("schema_core")  # idempotent
        assert _count(store) == 0


def test_transaction_commits_and_rolls_back(qcli_home):
    with OfflineStore() as store:
        with store.transaction() as con:
            con.execute("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", list(ROW))
        with pytest.raises(ZeroDivisionError), store.transaction() as con:
            con.execute("DELETE FROM bars")
            1 / 0  # noqa: B018
        assert _count(store) == 1
        with (
            pytest.raises(RuntimeError, match="not re-entrant"),
            store.transaction(),
            store.transaction(),
        ):
            pass
        assert _count(store) == 1


def test_primary_key_refuses_duplicate_bars(qcli_home):
    import duckdb

    with OfflineStore() as store:
        store.con.execute("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", list(ROW))
        with pytest.raises(duckdb.ConstraintException):
            store.con.execute("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", list(ROW))


def test_timestamps_come_back_in_utc(qcli_home, monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        with OfflineStore() as store:
            store.con.execute("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", list(ROW))
            (ts,) = store.con.execute("SELECT ts FROM bars").fetchone()
        assert ts == ROW[1] and ts.utcoffset().total_seconds() == 0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_read_only_open_of_a_missing_store_says_ingest_first(qcli_home):
    with pytest.raises(NotFoundError) as info:
        OfflineStore(read_only=True)
    assert "qcli data ingest" in info.value.hint
    assert not (qcli_home / "offline.duckdb").exists()


def test_require_table_names_the_table(qcli_home):
    with OfflineStore() as store, pytest.raises(NotFoundError, match="'nope' not found"):
        store.require_table("nope", hint="build it")


@pytest.mark.timeout(120)
def test_second_process_gets_store_busy_error(qcli_home, store_holder):
    t0 = time.monotonic()
    with pytest.raises(StoreBusyError, match="store is busy") as info:
        OfflineStore(busy_timeout=0.3)
    assert time.monotonic() - t0 < 10  # waited, then gave up: no hang
    assert info.value.exit_code == 2
    store_holder.kill()
    store_holder.wait()
    with OfflineStore(busy_timeout=5) as store:  # lock released with the holder
        assert store.table_exists("bars")


def test_table_exists_leaves_no_open_result_on_the_connection(qcli_home):
    from quantcli.store.offline import OfflineStore

    with OfflineStore() as store:
        assert store.table_exists("bars")
        # a DuckDB relation query on the same connection must still work afterwards
        assert store.con.sql("SELECT 42 AS x").fetchall() == [(42,)]
        store.con.register("frame_view", store.con.sql("SELECT 1 AS y").to_arrow_table())
