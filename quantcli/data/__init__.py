"""Bars in: the bundled sample, the synthetic universe, reading, validation and ingest.

Public API (re-exported here, loaded on first use so that ``import quantcli.data.defaults``
-- what the CLI needs at startup -- stays free of polars and duckdb):

* :func:`load_sample` -- the real SPX/IXIC daily bars bundled with the package.
* :func:`synthetic_universe` -- a seeded GARCH universe for tests and benchmarks.
* :func:`read_bars` -- one CSV/Parquet file into normal form, rows located.
* :func:`validate_bars` -- data-quality checks; errors raise, warnings are returned.
* :func:`check_spacing` -- the ``gap`` warning against an expected bar spacing (``"1d"``).
* :class:`TimestampWindow` -- the plausibility window of bar timestamps.
* :func:`is_valid_symbol` -- the one symbol rule of ingest and serving.
* :func:`ingest_frame`, :func:`ingest_files`, :func:`ingest_sample` -- validated, idempotent,
  all-or-nothing upserts into the offline store's ``bars`` table.
* :func:`validate_files` -- the ingest's checks on files, nothing written.
* :func:`bars_summary` -- symbols, row counts and date ranges of the stored bars.
* :func:`export_bars` -- the stored bars written to a Parquet or CSV file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantcli._lazy import lazy_exports

_EXPORTS = {
    "IngestResult": "quantcli.data.ingest",
    "ingest_files": "quantcli.data.ingest",
    "ingest_frame": "quantcli.data.ingest",
    "ingest_sample": "quantcli.data.ingest",
    "read_bars": "quantcli.data.reader",
    "load_sample": "quantcli.data.sample",
    "bars_summary": "quantcli.data.summary",
    "synthetic_universe": "quantcli.data.synthetic",
    "QualityIssue": "quantcli.data.quality",
    "QualityReport": "quantcli.data.quality",
    "ValidationResult": "quantcli.data.quality",
    "validate_files": "quantcli.data.ingest",
    "ExportResult": "quantcli.data.export",
    "export_bars": "quantcli.data.export",
    "check_spacing": "quantcli.data.validation",
    "validate_bars": "quantcli.data.validation",
    "TimestampWindow": "quantcli.data.window",
    "is_valid_symbol": "quantcli.data.symbols",
}

if TYPE_CHECKING:  # pragma: no cover
    from quantcli.data.export import ExportResult, export_bars
    from quantcli.data.ingest import (
        IngestResult,
        ingest_files,
        ingest_frame,
        ingest_sample,
        validate_files,
    )
    from quantcli.data.quality import QualityIssue, QualityReport, ValidationResult
    from quantcli.data.reader import read_bars
    from quantcli.data.sample import load_sample
    from quantcli.data.summary import bars_summary
    from quantcli.data.symbols import is_valid_symbol
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.data.validation import check_spacing, validate_bars
    from quantcli.data.window import TimestampWindow


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ExportResult",
    "IngestResult",
    "QualityIssue",
    "QualityReport",
    "TimestampWindow",
    "ValidationResult",
    "bars_summary",
    "check_spacing",
    "export_bars",
    "ingest_files",
    "ingest_frame",
    "ingest_sample",
    "is_valid_symbol",
    "load_sample",
    "read_bars",
    "synthetic_universe",
    "validate_bars",
    "validate_files",
]
