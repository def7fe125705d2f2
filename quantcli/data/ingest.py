"""Validated, idempotent, all-or-nothing ingest of OHLCV bars into the offline store.

Flow: read (CSV/Parquet, :mod:`quantcli.data.reader`) -> validate
(:mod:`quantcli.data.validation`; any error refuses the whole input before the store is even
opened) -> one transaction that upserts ``bars`` on ``(symbol, ts)`` and records the ingest
(sources, counts, input hash, quality warnings) in ``ingests``.

Counts: ``rows_inserted`` new keys, ``rows_updated`` existing keys whose values changed,
``rows_unchanged`` existing keys with identical values (not rewritten). Ingesting the same bars
twice therefore inserts nothing the second time and leaves ``bars`` byte-for-byte equal.

``input_sha256`` is the SHA-256 of the normalised bars sorted by ``(symbol, ts)``: the symbol
runs (``"<symbol>:<count>\n"`` per symbol, UTF-8), then ``ts`` as int64 microseconds since the
Unix epoch (UTC), then ``open, high, low, close, volume`` as little-endian float64 --
independent of the input format.

Test hook (used by the ``kill -9`` test, harmless otherwise): if the environment variable
``QCLI_TEST_INGEST_SLEEP`` holds a number of seconds, the ingest writes the line
``QCLI_TEST_HOOK inside-ingest-transaction`` to stderr after its inserts and sleeps that long
before ``COMMIT``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quantcli import __version__, resources
from quantcli._interop import to_polars
from quantcli.config import env_float
from quantcli.data.defaults import DEFAULT_OUTLIER_Z
from quantcli.data.normal_form import with_locations
from quantcli.data.quality import REQUIRED_COLUMNS, QualityReport, ValidationResult
from quantcli.data.reader import read_bars
from quantcli.data.sample import sample_paths
from quantcli.data.spacing import (
    SpacingReport,
    mismatched_spacing,
    parse_interval,
    stored_bar_times,
)
from quantcli.data.validation import check_bars
from quantcli.data.window import TimestampWindow
from quantcli.errors import InputError
from quantcli.results import Result
from quantcli.store.offline import OfflineStore
from quantcli.workspace import Workspace

TEST_HOOK_ENV = "QCLI_TEST_INGEST_SLEEP"
TEST_HOOK_MARKER = "QCLI_TEST_HOOK inside-ingest-transaction"


@dataclass(frozen=True, kw_only=True)
class IngestResult(Result):
    """What one ingest did (a bad input raises instead, so a result has passed).

    Attributes
    ----------
    ingest_id
        Key of the row in ``ingests``.
    sources
        The files (or ``"<frame>"``) that were ingested.
    rows_in
        Bars in the validated input.
    rows_inserted, rows_updated, rows_unchanged
        New keys; existing keys with changed values; existing keys with identical values.
    symbols
        Distinct symbols of the input, sorted.
    ts_min, ts_max
        First and last bar of the input (UTC).
    input_sha256
        Hash of the normalised input (see the module docstring).
    quality
        The :class:`~quantcli.data.validation.QualityReport` (warnings).
    store
        Path of the DuckDB file written.
    spacing
        With ``declared_interval``: the ingested symbols whose stored bars' median spacing
        contradicts it (a warning; ``None`` when no interval was declared).
    """

    passed: bool = True
    ingest_id: str
    ingested_at: datetime
    sources: list[str]
    rows_in: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    symbols: list[str]
    ts_min: datetime
    ts_max: datetime
    input_sha256: str
    quality: QualityReport
    store: str
    timings_s: dict[str, float] = field(default_factory=dict)
    spacing: SpacingReport | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "ingest_id": self.ingest_id,
            "ingested_at": self.ingested_at.isoformat(),
            "sources": list(self.sources),
            "rows_in": self.rows_in,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "rows_unchanged": self.rows_unchanged,
            "symbols": list(self.symbols),
            "ts_min": self.ts_min.isoformat(),
            "ts_max": self.ts_max.isoformat(),
            "input_sha256": self.input_sha256,
            "quality": self.quality.to_dict(),
            "store": self.store,
        }
        if self.spacing is not None:
            out["spacing"] = self.spacing.to_dict()
        return out

    @property
    def warnings(self) -> list[str]:
        """The spacing warnings, one line each (the quality warnings are in ``quality``)."""
        return self.spacing.messages() if self.spacing is not None else []


def bars_sha256(bars: pl.DataFrame) -> str:
    """SHA-256 of normal-form bars, sorted by ``(symbol, ts)`` first (see the module docstring)."""
    b = bars.select(REQUIRED_COLUMNS).sort("symbol", "ts")
    h = hashlib.sha256()
    runs = b["symbol"].rle()  # sorted, so one run per symbol: hashing runs is hashing the column
    for value, length in zip(runs.struct.field("value"), runs.struct.field("len"), strict=True):
        h.update(f"{value}:{length}\n".encode())
    h.update(b["ts"].dt.epoch("us").to_numpy().astype("<i8").tobytes())
    for col in ("open", "high", "low", "close", "volume"):
        h.update(np.ascontiguousarray(b[col].to_numpy(), dtype="<f8").tobytes())
    return h.hexdigest()


def _test_hook() -> None:
    seconds = env_float(TEST_HOOK_ENV, 0.0, lo=0.0, hi=3600.0)
    if not seconds:
        return
    sys.stderr.write(TEST_HOOK_MARKER + "\n")
    sys.stderr.flush()
    time.sleep(seconds)


def _ensure_fingerprints(store: OfflineStore, con) -> None:
    if not store.table_exists("bar_fingerprints"):
        # a store from before the table: fingerprint every stored bar once, then keep it
        con.execute(resources.sql("schema_bar_fingerprints"))
        con.execute(resources.sql("bar_fingerprints_refresh"))


def _staged_fingerprints(con) -> dict[str, tuple[int, int, int]]:
    """``symbol -> (bars, hash sum, hash xor)`` of the stored bars at the staged keys."""
    rows = con.execute(resources.sql("ingest_fingerprint_of_staged")).fetchall()
    return {str(s): (int(n), int(fp_sum), int(fp_xor)) for s, n, fp_sum, fp_xor in rows}


def _update_fingerprints(con, before: dict, after: dict) -> None:
    """Add the change between ``before`` and ``after`` (the staged keys' bars around the upsert)
    to ``bar_fingerprints``: a replaced bar leaves the sums, a new one enters them."""
    delta = []
    for symbol, (n, fp_sum, fp_xor) in after.items():
        n0, sum0, xor0 = before.get(symbol, (0, 0, 0))
        if (n, fp_sum, fp_xor) != (n0, sum0, xor0):
            delta.append((symbol, n - n0, str(fp_sum - sum0), str(fp_xor ^ xor0)))
    if not delta:
        return
    frame = pl.DataFrame(
        delta, schema={"symbol": pl.String, "n": pl.Int64, "fp_sum": pl.String,
                       "fp_xor": pl.String}, orient="row"
    )  # fmt: skip
    con.register("fingerprint_delta", frame.to_arrow())
    try:
        con.execute(resources.sql("ingest_fingerprint_apply"))
    finally:
        con.unregister("fingerprint_delta")


def write_bars(
    bars: pl.DataFrame,
    report: QualityReport,
    sources: Sequence[str],
    *,
    store: OfflineStore | None = None,
    workspace: Workspace | None = None,
    declared_interval: str | None = None,
    declared_by: str = "--interval",
) -> IngestResult:
    """Upsert validated normal-form ``bars`` and record the ingest, in ONE transaction.

    Most callers want :func:`ingest_frame` or :func:`ingest_files`, which validate first.
    ``store`` defaults to the offline store of ``workspace`` (default
    :meth:`Workspace.from_env`), opened and closed here. ``declared_interval`` (``"1d"``):
    after the commit, the ingested symbols' stored bars are checked against it
    (:class:`~quantcli.data.spacing.SpacingReport`, named ``declared_by`` in its message).
    """
    if store is None:
        with (workspace or Workspace.from_env()).offline() as own:
            return write_bars(
                bars, report, sources, store=own,
                declared_interval=declared_interval, declared_by=declared_by,
            )  # fmt: skip
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sha = bars_sha256(bars)
    timings["hash"] = time.perf_counter() - t0
    now = datetime.now(UTC)
    ingest_id = hashlib.sha256(f"{sha}|{now.isoformat()}".encode()).hexdigest()[:16]
    symbols = bars["symbol"].unique().sort().to_list()
    t0 = time.perf_counter()
    record = [ingest_id, now, json.dumps(list(sources)), sha]
    existing, unchanged = _upsert(store, bars, report, record, symbols)
    timings["write"] = time.perf_counter() - t0
    spacing = None
    if declared_interval is not None:
        stored = stored_bar_times(store, symbols)
        spacing = SpacingReport(
            frequency=declared_interval,
            mismatched=mismatched_spacing(stored, parse_interval(declared_interval)),
            declared_by=declared_by,
        )
    return IngestResult(
        ingest_id=ingest_id,
        ingested_at=now,
        sources=list(sources),
        rows_in=bars.height,
        rows_inserted=bars.height - existing,
        rows_updated=existing - unchanged,
        rows_unchanged=unchanged,
        symbols=symbols,
        ts_min=bars["ts"].min(),
        ts_max=bars["ts"].max(),
        input_sha256=sha,
        quality=report,
        store=str(store.path),
        timings_s=timings,
        spacing=spacing,
    )


def _upsert(
    store: OfflineStore, bars: pl.DataFrame, report: QualityReport, record: list, symbols: list
) -> tuple[int, int]:
    """The one transaction of an ingest: upsert ``bars``, keep ``bar_fingerprints``, record the
    ingest (``record`` = id, time, sources, hash). Returns (keys that existed, unchanged)."""
    store.con.register("staged_bars", bars.select(REQUIRED_COLUMNS).to_arrow())
    try:
        with store.transaction() as con:
            existing, unchanged = con.execute(resources.sql("ingest_count_existing")).fetchone()
            _ensure_fingerprints(store, con)
            before = _staged_fingerprints(con) if existing else {}
            # a fresh key set takes the plain INSERT: ON CONFLICT costs a lookup per row in
            # DuckDB's ART primary-key index
            con.execute(resources.sql("ingest_upsert" if existing else "ingest_insert"))
            _update_fingerprints(con, before, _staged_fingerprints(con))
            con.execute(
                resources.sql("ingest_record"),
                [
                    *record,
                    bars.height,
                    bars.height - existing,
                    existing - unchanged,
                    unchanged,
                    json.dumps(symbols),
                    json.dumps(report.to_dict(), sort_keys=True, default=str),
                    __version__,
                ],
            )
            _test_hook()
    finally:
        store.con.unregister("staged_bars")
    return existing, unchanged


def ingest_frame(
    df: pl.DataFrame,
    *,
    store: OfflineStore | None = None,
    source: str = "<frame>",
    outlier_z: float = DEFAULT_OUTLIER_Z,
    line_numbers: Sequence[int] | None = None,
    window: TimestampWindow | None = None,
    interval: str | timedelta | None = None,
    workspace: Workspace | None = None,
    declared_interval: str | None = None,
    declared_by: str = "--interval",
) -> IngestResult:
    """Validate a frame of bars and upsert it into the offline store.

    Parameters
    ----------
    df
        Columns ``symbol, ts, open, high, low, close, volume`` (see
        :func:`~quantcli.data.validation.validate_bars` for accepted ``ts`` types).
    store
        An open :class:`~quantcli.store.offline.OfflineStore`; default: the offline store of
        ``workspace`` (default :meth:`Workspace.from_env`), opened only after validation
        passed (a refused input never creates or touches the file).
    source
        How messages and the ``ingests`` record name the input.
    outlier_z
        Robust z-score threshold of the ``outlier`` warning.
    line_numbers
        Per-row locations for messages (default: the 0-based row index).
    window
        The plausibility window of ``ts``
        (:class:`~quantcli.data.window.TimestampWindow`; default 1900-01-01 to one day after now).
    interval
        The expected bar spacing of the ``gap`` warning (``"1d"``, ``"5m"``; default inferred).
    declared_interval, declared_by
        The bar interval the bars should have (``"1d"``) and who declared it; the result's
        ``spacing`` then names the symbols whose median spacing contradicts it (a warning).

    Raises
    ------
    DataValidationError
        Any error-severity finding (exit code 2); the store is unchanged.
    StoreBusyError
        Another process holds the store (exit code 2).
    """
    df = to_polars(df, "df")  # pandas and pyarrow bars are accepted wherever polars is
    if df.height == 0:
        raise InputError(f"{source}: no rows to ingest")
    kind = "line" if line_numbers is not None else "row"
    frame = with_locations(df, source, line_numbers, kind)
    bars, report = check_bars(
        frame,
        source=source,
        kinds={source: kind},
        outlier_z=outlier_z,
        window=window,
        interval=interval,
    )
    return write_bars(
        bars, report, [source], store=store, workspace=workspace,
        declared_interval=declared_interval, declared_by=declared_by,
    )  # fmt: skip


def read_files(
    paths: Sequence[str | os.PathLike[str]],
    symbol: str | None = None,
    *,
    outlier_z: float = DEFAULT_OUTLIER_Z,
    labels: Sequence[str] | None = None,
    on_step: Callable[[str], None] | None = None,
    window: TimestampWindow | None = None,
    interval: str | timedelta | None = None,
) -> tuple[pl.DataFrame, QualityReport, list[str]]:
    """Read and validate files together (duplicates across files are errors too).

    Returns the normal-form bars sorted by ``(symbol, ts)``, the quality report and the source
    names. Nothing is written. ``window`` and ``interval`` as in :func:`ingest_frame`.
    """
    if not paths:
        raise InputError("no input files", hint="pass one or more CSV/Parquet paths, or --sample")
    labels = list(labels) if labels is not None else [str(p) for p in paths]
    if len(set(labels)) != len(labels):
        raise InputError(f"the same file is given twice: {', '.join(labels)}")
    raws = []
    for path, label in zip(paths, labels, strict=True):
        if on_step:
            on_step(f"reading {label}")
        raws.append(read_bars(path, symbol=symbol, label=label))
    if on_step:
        on_step("validating")
    frame = pl.concat([r.frame for r in raws], how="vertical")
    kinds = {r.source: r.location_kind for r in raws}
    source = ", ".join(labels)
    bars, report = check_bars(
        frame, source=source, kinds=kinds, outlier_z=outlier_z, window=window, interval=interval
    )
    return bars, report, labels


def ingest_files(
    paths: Sequence[str | os.PathLike[str]],
    symbol: str | None = None,
    *,
    store: OfflineStore | None = None,
    outlier_z: float = DEFAULT_OUTLIER_Z,
    labels: Sequence[str] | None = None,
    on_step: Callable[[str], None] | None = None,
    window: TimestampWindow | None = None,
    interval: str | timedelta | None = None,
    workspace: Workspace | None = None,
    declared_interval: str | None = None,
    declared_by: str = "--interval",
) -> IngestResult:
    """Read, validate and upsert CSV/Parquet files as ONE ingest (one transaction).

    Parameters
    ----------
    paths
        Files to ingest together (see :func:`~quantcli.data.reader.read_bars`).
    symbol
        The symbol of files without a symbol column (``--symbol``).
    store, workspace, outlier_z, window, interval, declared_interval, declared_by
        As in :func:`ingest_frame`.
    labels
        How messages name each file (default: the paths as given).
    on_step
        Called with a short description before each step (for progress display).

    Examples
    --------
    Shell: ``qcli data ingest prices.csv --symbol AAPL``.
    """
    bars, report, sources = read_files(
        paths,
        symbol,
        outlier_z=outlier_z,
        labels=labels,
        on_step=on_step,
        window=window,
        interval=interval,
    )
    if on_step:
        on_step("writing the offline store")
    return write_bars(
        bars, report, sources, store=store, workspace=workspace,
        declared_interval=declared_interval, declared_by=declared_by,
    )  # fmt: skip


def ingest_sample(
    *,
    store: OfflineStore | None = None,
    outlier_z: float = DEFAULT_OUTLIER_Z,
    on_step: Callable[[str], None] | None = None,
    window: TimestampWindow | None = None,
    interval: str | timedelta | None = None,
    workspace: Workspace | None = None,
    declared_interval: str | None = None,
    declared_by: str = "--interval",
) -> IngestResult:
    """Ingest the bundled real sample (SPX and IXIC daily bars, see :mod:`quantcli.data.sample`);
    the keywords as in :func:`ingest_files`."""
    paths: list[Path] = sample_paths()
    return ingest_files(
        paths,
        store=store,
        outlier_z=outlier_z,
        labels=[f"sample:{p.name}" for p in paths],
        on_step=on_step,
        window=window,
        interval=interval,
        workspace=workspace,
        declared_interval=declared_interval,
        declared_by=declared_by,
    )


def validate_files(
    paths: Sequence[str | os.PathLike[str]],
    symbol: str | None = None,
    *,
    outlier_z: float = DEFAULT_OUTLIER_Z,
    on_step: Callable[[str], None] | None = None,
    window: TimestampWindow | None = None,
    interval: str | timedelta | None = None,
) -> ValidationResult:
    """The checks of :func:`ingest_files` without writing anything (``qcli data validate``).

    A refused input raises :class:`~quantcli.errors.DataValidationError` (exit code 2), as the
    ingest would; the result lists the warnings.
    """
    _bars, report, _sources = read_files(
        paths, symbol, outlier_z=outlier_z, on_step=on_step, window=window, interval=interval
    )
    return ValidationResult(quality=report)


__all__ = [
    "IngestResult",
    "bars_sha256",
    "ingest_files",
    "ingest_frame",
    "ingest_sample",
    "read_files",
    "validate_files",
    "write_bars",
]
