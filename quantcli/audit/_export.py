"""Export ledger records to Parquet (``qcli audit export``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from quantcli.audit._verify import verify_ledger
from quantcli.errors import InputError, IntegrityError
from quantcli.results import Result

# The exported columns, in order. ``onnx_model`` is flattened into name and sha256; ``event``
# is "prediction" for a served prediction (its record has no event key) and the record's event
# otherwise (shadow, swap, share, halt, resume, refusal, swap_refused, adopted); ``details``
# holds, as sorted JSON, every field of the record no other column has (a shadow's two
# predictions, a swap's versions and reason), so an export loses nothing the ledger recorded.
EXPORT_SCHEMA: dict[str, pl.DataType] = {
    "seq": pl.Int64(),
    "recorded_at": pl.Datetime("us", "UTC"),
    "event": pl.String(),
    "arm": pl.String(),
    "request_id": pl.String(),
    "source": pl.String(),
    "alias": pl.String(),
    "symbol": pl.String(),
    "prediction": pl.Float64(),
    "fallback": pl.String(),  # null (online), "missing" or "stale" (offline store)
    "feature_ts": pl.Datetime("us", "UTC"),
    "features_sha256": pl.String(),
    "model_name": pl.String(),
    "model_version": pl.String(),
    "model_run_id": pl.String(),
    "feature_version": pl.String(),
    "dataset_manifest_id": pl.String(),
    "onnx_model_name": pl.String(),
    "onnx_model_sha256": pl.String(),
    "inference_latency_ms": pl.Float64(),
    "deployed_at": pl.String(),
    "prev_hash": pl.String(),
    "hash": pl.String(),
    "sig": pl.String(),  # the signature a batch's last record carries
    "details": pl.String(),
}
PREDICTION = "prediction"
_FLATTENED = frozenset({"onnx_model"})


@dataclass(frozen=True, kw_only=True)
class LedgerExport(Result):
    """``rows`` records (of the ``ledger_records`` verified, ending in ``head_hash``) recorded at
    or after ``since`` (ISO-8601 UTC, or ``None`` for all), written to the Parquet ``output``."""

    output: str
    rows: int
    since: str | None
    ledger_records: int
    head_hash: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "rows": self.rows,
            "since": self.since,
            "ledger_records": self.ledger_records,
            "head_hash": self.head_hash,
        }


def parse_since(since: str | date | datetime | None) -> datetime | None:
    """``--since`` as an aware UTC datetime: a date (``2026-01-31``, midnight UTC) or ISO-8601."""
    if since is None or isinstance(since, datetime):
        if isinstance(since, datetime) and since.tzinfo is None:
            return since.replace(tzinfo=UTC)
        return since
    if isinstance(since, date):
        return datetime(since.year, since.month, since.day, tzinfo=UTC)
    try:
        value = datetime.fromisoformat(since.strip())
    except ValueError:
        raise InputError(
            f"--since: '{since}' is not a date or ISO-8601 timestamp",
            hint="e.g. --since 2026-01-31 or --since 2026-01-31T12:00:00+00:00",
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _fits(kind: pl.DataType, value: Any) -> Any:
    """``value`` as column type ``kind`` wants it, or :data:`_MISFIT` when it is not one."""
    if value is None:
        return None
    if isinstance(kind, pl.Datetime):
        if not isinstance(value, str):
            return _MISFIT
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return _MISFIT
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    if isinstance(kind, pl.Float64):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else _MISFIT
    if isinstance(kind, pl.Int64):
        return value if type(value) is int else _MISFIT
    return value if isinstance(value, str) else _MISFIT


_MISFIT = object()
_STRINGIFIED = ("model_version", "feature_version")  # registry versions stored as ints too


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    onnx = rec.get("onnx_model")
    flat = isinstance(onnx, dict) and set(onnx) <= {"name", "sha256"}
    rest = {
        k: v for k, v in rec.items() if k not in EXPORT_SCHEMA and not (flat and k in _FLATTENED)
    }
    row: dict[str, Any] = {}
    for key, kind in EXPORT_SCHEMA.items():
        value = rec.get(key)
        if key in _STRINGIFIED and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        fitted = _fits(kind, value)
        if fitted is _MISFIT:  # kept verbatim in details rather than lost or a crash
            rest[key] = value
            fitted = None
        row[key] = fitted
    row["event"] = rec.get("event", PREDICTION) if isinstance(rec.get("event", ""), str) else None
    row["onnx_model_name"] = _fits(pl.String(), onnx.get("name")) if flat else None
    row["onnx_model_sha256"] = _fits(pl.String(), onnx.get("sha256")) if flat else None
    for key in ("onnx_model_name", "onnx_model_sha256"):
        if row[key] is _MISFIT:
            rest["onnx_model"], row[key] = onnx, None
    row["details"] = json.dumps(rest, sort_keys=True, separators=(",", ":")) if rest else None
    return row


def export_ledger(
    output: str | os.PathLike[str],
    *,
    since: str | date | datetime | None = None,
    path: str | os.PathLike[str] | None = None,
) -> LedgerExport:
    """Write the ledger's records recorded at or after ``since`` to the Parquet file ``output``.

    The chain is verified first: a broken ledger is not exported (:class:`IntegrityError`, exit
    code 1); records appended after that check are not exported. With ``since``, a record
    without ``recorded_at`` is left out. Rows keep ledger order (``seq``); timestamps are UTC. A
    value that does not fit its column's type is kept, verbatim, in ``details``. The file is
    written to a temporary name and renamed, so a failed export leaves no partial file.
    """
    since_dt = parse_since(since)
    out = Path(output)
    if out.suffix != ".parquet":
        raise InputError(f"--output: '{out}' must end in .parquet")
    if not out.parent.is_dir():
        raise InputError(f"--output: the directory {out.parent} does not exist")
    check = verify_ledger(path)
    if not check.passed:
        b = check.first_broken
        raise IntegrityError(
            f"{check.path}: record seq {b['seq']} (line {b['line']}) is broken: {b['reason']}; "
            "refusing to export",
            hint="run `qcli audit verify` for details",
        )
    rows = []
    with open(check.path, "rb") as fh:
        for _, raw in zip(range(check.records), fh, strict=False):  # what was verified
            row = _row(json.loads(raw))
            # a record without a time (an adoption by an older quantcli) is not known to be
            # at or after --since
            at = row["recorded_at"]
            if since_dt is None or (at is not None and at >= since_dt):
                rows.append(row)
    frame = pl.DataFrame(rows, schema=EXPORT_SCHEMA, orient="row")
    tmp = out.with_name(out.name + ".tmp")
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return LedgerExport(
        passed=True,
        output=str(out),
        rows=frame.height,
        since=since_dt.isoformat() if since_dt else None,
        ledger_records=check.records,
        head_hash=check.head_hash,
    )
