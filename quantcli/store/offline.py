"""The DuckDB offline store at ``$QCLI_HOME/offline.duckdb``.

Guarantees every writer relies on:

* **One transaction per write.** :meth:`OfflineStore.transaction` wraps ``BEGIN``/``COMMIT`` and
  rolls back on any exception; DuckDB's write-ahead log makes a killed process (``kill -9``) lose
  only the uncommitted transaction, so the file is exactly as before.
* **No residue.** A build stages rows in ``.feature-build-<pid>-*`` directories beside the file;
  a build killed with ``kill -9`` cannot remove its own, so every open of the store (the next
  command) removes those whose process is gone (:func:`remove_orphaned_staging`).
* **One writer at a time.** DuckDB locks the file per process. A second process that opens the
  store while another holds it waits up to ``busy_timeout`` seconds (``QCLI_BUSY_TIMEOUT``,
  default 2), then gets :class:`~quantcli.errors.StoreBusyError` (exit code 2), never a hang or a
  corrupted file.

Schema and queries live in ``sql/*.sql`` and are loaded through :mod:`quantcli.resources`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from quantcli import config, resources
from quantcli.errors import InputError, NotFoundError, StoreBusyError

_LOCK_MARKERS = ("could not set lock", "conflicting lock", "lock on file")

STAGING_PREFIX = ".feature-build-"
_STAGING_PID = re.compile(re.escape(STAGING_PREFIX) + r"(\d+)-")


def staging_prefix() -> str:
    """The prefix of this process's staging directories: ``.feature-build-<pid>-``."""
    return f"{STAGING_PREFIX}{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**22  # another user's live process; an absurd pid is no process
    return True


def remove_orphaned_staging(directory: Path, *, unnamed: bool = True) -> list[Path]:
    """Remove the staging directories of builds whose process is gone; returns them.

    ``unnamed``: also remove names without a pid (written by older versions); only a caller
    holding the store's write lock may, since then no build of this store is running.
    """
    removed = []
    try:
        entries = list(directory.glob(STAGING_PREFIX + "*"))
    except OSError:
        return removed
    for entry in entries:
        m = _STAGING_PID.match(entry.name)
        if (m and _process_alive(int(m.group(1)))) or (m is None and not unnamed):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


ENV_BUSY_TIMEOUT = "QCLI_BUSY_TIMEOUT"


def _busy_timeout() -> float:
    """``QCLI_BUSY_TIMEOUT`` seconds, checked: ``nan`` would wait forever, ``abc`` hide a typo."""
    return config.env_float(ENV_BUSY_TIMEOUT, 2.0, lo=0.0, hi=86_400.0, unit="seconds")


class OfflineStore:
    """A connection to the offline store; use as a context manager.

    Parameters
    ----------
    path
        The DuckDB file; defaults to ``$QCLI_HOME/offline.duckdb``.
    read_only
        Open for reading only. A read-only open of a missing store raises
        :class:`~quantcli.errors.NotFoundError` telling the user to ingest first.
    busy_timeout
        Seconds to wait for another process's lock before raising ``StoreBusyError``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        read_only: bool = False,
        busy_timeout: float | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else config.offline_store_path()
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise NotFoundError(
                f"no offline store at {self.path}",
                hint="run `qcli data ingest PATH` (or `qcli data ingest --sample`) first",
            )
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # e.g. $QCLI_HOME names a file
                raise InputError(
                    f"{self.path.parent}: cannot create the state directory: {exc.strerror or exc}",
                    hint=f"point {config.ENV_HOME} at a directory",
                ) from None
        if busy_timeout is None:
            busy_timeout = _busy_timeout()
        elif not (math.isfinite(busy_timeout) and busy_timeout >= 0):  # nan: wait forever
            raise ValueError(f"`busy_timeout` must be a finite number >= 0, got {busy_timeout}.")
        self.con = self._connect(busy_timeout)
        self._in_tx = False
        remove_orphaned_staging(self.path.parent, unnamed=not read_only)
        if not read_only:
            self.ensure_schema("schema_core")

    def _connect(self, timeout: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=self.read_only)
                # no DuckDB progress bar: it would write to stdout, which --json reserves
                con.execute("SET enable_progress_bar = false")
                # TIMESTAMPTZ values come back as UTC datetimes, whatever the machine's zone
                con.execute("SET TimeZone = 'UTC'")
                return con
            except duckdb.IOException as exc:
                if not any(m in str(exc).lower() for m in _LOCK_MARKERS):
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else "I/O error"
                    raise InputError(
                        f"{self.path}: cannot open the offline store: {first}"
                    ) from None
                if time.monotonic() >= deadline:
                    raise StoreBusyError(
                        f"store is busy: another process holds {self.path}",
                        hint="wait for the other qcli command to finish, or raise "
                        "QCLI_BUSY_TIMEOUT (seconds)",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> OfflineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """``BEGIN`` ... ``COMMIT``; ``ROLLBACK`` on any exception. Not re-entrant."""
        if self._in_tx:
            raise RuntimeError("OfflineStore.transaction() is not re-entrant")
        self._in_tx = True
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")
        finally:
            self._in_tx = False

    # -- schema and queries ----------------------------------------------------------------
    def ensure_schema(self, name: str) -> None:
        """Run the idempotent DDL file ``sql/<name>.sql`` (``CREATE ... IF NOT EXISTS``)."""
        self.con.execute(resources.sql(name))

    def query(self, name: str, params: list[Any] | dict[str, Any] | None = None):
        """Execute the query ``sql/<name>.sql`` with ``params``; returns the DuckDB relation."""
        return self.con.execute(resources.sql(name), params or [])

    def table_exists(self, table: str) -> bool:
        # fetchall(), not fetchone(): DuckDB 2 keeps a half-read result open on the connection,
        # and a later con.sql()/con.register() then fails with "unfinished result"
        rows = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchall()
        return bool(rows and rows[0][0])

    def require_table(self, table: str, hint: str) -> None:
        if not self.table_exists(table):
            raise NotFoundError(f"table '{table}' not found in {self.path}", hint=hint)


def open_store(read_only: bool = False, path: str | os.PathLike[str] | None = None) -> OfflineStore:
    """Open the offline store of ``$QCLI_HOME`` (or ``path``)."""
    return OfflineStore(path, read_only=read_only)
