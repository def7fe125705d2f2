"""The one writer of a feature build: deletes and inserts computed waves, in shard order.

Everything here runs inside the build's transaction, on its one DuckDB connection: the
:class:`WaveWriter` applies each :class:`~quantcli.features.shard.ShardResult` (its deletes,
the per-symbol build and kernel states, then its rows through :func:`insert_rows`), and
:func:`memory_limit` bounds DuckDB's buffer pool while the build runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from quantcli import resources
from quantcli.errors import InputError
from quantcli.features import state_codec
from quantcli.features.shard import ShardResult
from quantcli.store.offline import OfflineStore

#: DuckDB's memory_limit while a build runs (``QCLI_BUILD_MEMORY_LIMIT``); it bounds the buffer
#: pool of a long build (docs/scaling.md has the peak memory of a 25 M row build under it). The
#: previous setting is restored afterwards.
ENV_MEMORY_LIMIT = "QCLI_BUILD_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "4GB"


@contextmanager
def memory_limit(store: OfflineStore, limit: str) -> Iterator[None]:
    """DuckDB's ``memory_limit`` for the duration of a build, then the previous value back."""
    previous = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    try:
        store.con.execute("SET memory_limit = ?", [limit])
    except Exception as exc:  # duckdb raises its own error types for a malformed size
        raise InputError(
            f"{ENV_MEMORY_LIMIT}: DuckDB refused memory_limit {limit!r}: {exc}",
            hint="use a size such as 2GB or 512MB",
        ) from None
    try:
        yield
    finally:
        # DuckDB prints the setting rounded ("18.7 GiB"): RESET restores an untouched default
        # exactly; only a value the caller had set is written back (to that rounding)
        store.con.execute("RESET memory_limit")
        now = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        if now != previous:
            store.con.execute("SET memory_limit = ?", [previous])


def insert_rows(con, table: str, rows: pl.DataFrame, staging: str) -> None:
    """Insert ``rows`` through an uncompressed Parquet file in ``staging``.

    Why not register the Arrow table: inside one long transaction DuckDB keeps rows appended from
    an Arrow scan in memory (past memory_limit, growing with the rows inserted),
    while rows from its own Parquet reader go to the database file; a 25 M row build stays
    bounded only this way.
    """
    path = Path(staging) / f"rows-{time.perf_counter_ns()}.parquet"
    rows.write_parquet(path, compression="uncompressed", statistics=False)
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet('{quoted}')")
    finally:
        path.unlink(missing_ok=True)


class WriteCancelled(Exception):
    """The build failed elsewhere; the background writer stops before its next statement."""


class WaveWriter:
    """The one writer: deletes and inserts a computed wave, in shard order, on one connection.

    ``start(results, background=True)`` writes on a single background thread and returns at
    once, so the driver's executor computes the next wave meanwhile; ``wait()`` joins it and
    re-raises its error. The connection serves one thread at a time: the driver calls ``wait()``
    before it touches the connection again (to read the next wave's bars). ``abort()`` (the
    build failed: a shard raised, Ctrl-C) stops a write in flight -- between statements through
    a flag, inside one through DuckDB's ``interrupt`` -- and waits for the thread, so the
    transaction's ROLLBACK runs alone and nothing of the next wave is ever written.

    ``seconds`` is the time spent writing; ``waited_s`` the part of it the driver waited for
    (a synchronous write, or a background write that outlasted the next wave's compute).
    """

    def __init__(self, con, table: str, feature_set: str, since_dt, mode: str, scoped: bool,
                 staging: str) -> None:  # fmt: skip
        self._con = con
        self._args = (table, feature_set, since_dt, mode, scoped)
        self._staging = staging
        self._cancel = threading.Event()
        self._thread: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self.rows_deleted = 0
        self.seconds = 0.0
        self.waited_s = 0.0

    def start(self, results: list[ShardResult], *, background: bool) -> None:
        """Write ``results`` (one wave, shard order); in the background unless told otherwise."""
        if self._future is not None:
            raise RuntimeError("a wave is still being written; call wait() first")
        if not background:
            t0 = time.perf_counter()
            self._write(results)
            self.waited_s += time.perf_counter() - t0
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="qcli-feature-writer")
        self._future = self._thread.submit(self._write, results)

    def _write(self, results: list[ShardResult]) -> None:
        t0 = time.perf_counter()
        table, feature_set, since_dt, mode, scoped = self._args
        try:
            for k, res in enumerate(results):
                results[k] = None  # type: ignore[call-overload]  # free each shard once written
                if self._cancel.is_set():
                    raise WriteCancelled
                self.rows_deleted += apply_shard(self._con, table, feature_set, res, since_dt, mode,
                                            scoped)  # fmt: skip
                if res.rows.height:
                    if self._cancel.is_set():
                        raise WriteCancelled
                    insert_rows(self._con, table, res.rows, self._staging)
        finally:
            self.seconds += time.perf_counter() - t0

    def wait(self) -> None:
        """Join the background write (if any); its exception, if it failed, is raised here."""
        future, self._future = self._future, None
        if future is None:
            return
        t0 = time.perf_counter()
        try:
            future.result()
        finally:
            self.waited_s += time.perf_counter() - t0

    def abort(self) -> BaseException | None:
        """Stop the background write and wait until the thread no longer uses the connection.

        Returns how the write in flight ended: ``None`` if it had finished (or none was
        running), else its exception (DuckDB's ``InterruptException``, ``WriteCancelled``).
        """
        self._cancel.set()
        future, self._future = self._future, None
        if future is None:
            return None
        if not future.done():
            self._con.interrupt()  # a long INSERT stops now instead of running to its end
        while True:  # a second Ctrl-C must not let ROLLBACK race the writer on the connection
            try:
                wait_futures([future])
                break
            except KeyboardInterrupt:
                continue
        return future.exception()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None


def scalar(con, query: str, params: list | None = None) -> int:
    # fetchall, not fetchone: DuckDB 2 keeps a half-read result open and then refuses .sql()
    return int(con.execute(query, params or []).fetchall()[0][0])


def apply_shard(
    con, table: str, feature_set: str, res: ShardResult, since_dt, mode: str, scoped: bool
) -> int:
    """Delete what ``res`` replaces and store its per-symbol state; returns rows deleted."""
    deleted = 0
    if res.rewrite and not (mode == "full" and not scoped):
        placeholders = ", ".join("?" for _ in res.rewrite)
        deleted += scalar(
            con, f"SELECT count(*) FROM {table} WHERE symbol IN ({placeholders})", res.rewrite
        )
        con.execute(f"DELETE FROM {table} WHERE symbol IN ({placeholders})", res.rewrite)
    if res.since_delete:
        placeholders = ", ".join("?" for _ in res.since_delete)
        params = [*res.since_delete, since_dt]
        where = f"WHERE symbol IN ({placeholders}) AND ts >= ?"
        deleted += scalar(con, f"SELECT count(*) FROM {table} {where}", params)
        con.execute(f"DELETE FROM {table} {where}", params)
    if res.drop_state:
        placeholders = ", ".join("?" for _ in res.drop_state)
        con.execute(
            f"DELETE FROM feature_build_state WHERE feature_set = ? AND symbol IN ({placeholders})",
            [feature_set, *res.drop_state],
        )
    if res.new_state:
        staged = pl.DataFrame(
            res.new_state,
            schema={"symbol": pl.String, "last_bar_us": pl.Int64, "n_bars": pl.Int64,
                    "history_sha256": pl.String},
            orient="row",
        ).with_columns(
            pl.from_epoch("last_bar_us", time_unit="us").dt.replace_time_zone("UTC")
            .alias("last_bar_ts")
        ).select("symbol", "last_bar_ts", "n_bars", "history_sha256")  # fmt: skip
        con.register("staged_state", staged.to_arrow())
        try:
            con.execute(resources.sql("features_state_upsert"), [feature_set, ""])
        finally:
            con.unregister("staged_state")
    if res.drop_stream:
        placeholders = ", ".join("?" for _ in res.drop_stream)
        where = f"WHERE feature_set = ? AND symbol IN ({placeholders})"
        con.execute(f"DELETE FROM feature_stream_state {where}", [feature_set, *res.drop_stream])
    if res.stream_states:
        staged = pl.DataFrame(
            res.stream_states,
            schema={"symbol": pl.String, "layout_sha256": pl.String, "n_bars": pl.Int64,
                    "last_bar_us": pl.Int64, "state": pl.Binary, "bars_fingerprint": pl.String},
            orient="row",
        ).with_columns(
            pl.from_epoch("last_bar_us", time_unit="us").dt.replace_time_zone("UTC")
            .alias("last_bar_ts")
        ).select("symbol", "layout_sha256", "n_bars", "last_bar_ts", "state",
                 "bars_fingerprint")  # fmt: skip
        con.register("staged_stream_state", staged.to_arrow())
        try:
            params = [feature_set, state_codec.CODEC]
            con.execute(resources.sql("features_stream_state_update"), params)
            con.execute(resources.sql("features_stream_state_insert"), params)
        finally:
            con.unregister("staged_stream_state")
    return deleted


def migrate_stream_state(con) -> bool:
    """Move the kernel states of a store created before the state column was stored
    uncompressed (``schema_features.sql``) to a table that stores it so; in the caller's
    transaction, after ``schema_features.sql``. Returns whether there was anything to move."""
    rows = con.execute(
        "SELECT sql FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'feature_stream_state'"
    ).fetchall()
    if not rows or "USING COMPRESSION" in rows[0][0].upper():
        return False
    con.execute("ALTER TABLE feature_stream_state RENAME TO feature_stream_state_old")
    con.execute(resources.sql("schema_features"))
    con.execute(resources.sql("features_stream_state_migrate"))
    return True


__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "ENV_MEMORY_LIMIT",
    "WaveWriter",
    "WriteCancelled",
    "apply_shard",
    "insert_rows",
    "memory_limit",
    "migrate_stream_state",
    "scalar",
]
