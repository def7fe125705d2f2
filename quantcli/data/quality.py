"""The data-quality findings: one :class:`QualityIssue` per check, a :class:`QualityReport` of
the warnings, and the one rule that turns error findings into :class:`DataValidationError`.

The checks themselves live in :mod:`quantcli.data.validation` (and the reader, for parse
errors); this module is what they report in, so the reader and the checks share it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from quantcli.data.symbols import SYMBOL_RULE
from quantcli.errors import DataValidationError
from quantcli.results import Result

REQUIRED_COLUMNS: tuple[str, ...] = ("symbol", "ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
NUMERIC_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")

#: How many example locations each issue keeps (the count is always exact).
MAX_EXAMPLES: int = 5

# Internal location columns carried through reading and validation; never stored.
SOURCE_COL = "__source"
LINE_COL = "__line"
NAIVE_COL = "__naive_ts"
ROW_COL = "__row"

_CHECK_TEXT = {
    "missing_column": "required column missing",
    "unparseable": "value cannot be parsed",
    "null": "null, NaN or empty value",
    "invalid_symbol": f"symbol is not {SYMBOL_RULE}",
    "implausible_ts": "timestamp outside the plausibility window",
    "leap_second": "leap second (23:59:60)",
    "non_finite": "infinite value",
    "non_positive_price": "price <= 0",
    "ohlc_inconsistent": "high/low inconsistent with open/close",
    "negative_volume": "volume < 0",
    "duplicate_key": "duplicate (symbol, ts)",
    "zero_volume": "volume == 0 (kept)",
    "unsorted": "ts goes backwards within a symbol (bars were sorted)",
    "naive_timestamp": "timestamp without time zone (assumed UTC)",
    "gap": "bars missing against the expected spacing (kept)",
    "outlier": "one-bar log return beyond the robust z-score threshold (kept)",
}


@dataclass(frozen=True)
class QualityIssue:
    """One data-quality finding, aggregated over all the rows it affects.

    Attributes
    ----------
    check
        The check name (``null``, ``zero_volume``, ... see the module docstring).
    severity
        ``"error"`` (the input is refused) or ``"warning"`` (reported and recorded).
    count
        Exact number of affected rows (values, for ``null``/``unparseable``).
    examples
        Up to :data:`MAX_EXAMPLES` locations, each a dict with ``source``, ``location``
        (``"line 7"`` or ``"row 5"``), ``column`` and ``detail``.
    """

    check: str
    severity: str
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def description(self) -> str:
        return _CHECK_TEXT.get(self.check, self.check)

    def first_location(self) -> str:
        """``"<source> line 7, column 'high': <detail>"`` for the first example."""
        if not self.examples:
            return self.description
        ex = self.examples[0]
        where = f"{ex['source']} {ex['location']}" if ex.get("location") else ex["source"]
        col = f", column '{ex['column']}'" if ex.get("column") else ""
        return f"{where}{col}: {ex['detail']}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "count": self.count,
            "description": self.description,
            "examples": list(self.examples),
        }


@dataclass(frozen=True, kw_only=True)
class QualityReport(Result):
    """The outcome of :func:`~quantcli.data.validation.validate_bars`: row counts and the
    warnings (errors raise, so a report that exists has passed).

    Attributes
    ----------
    source
        What was validated (file names joined by ``", "``, or ``"<frame>"``).
    rows, symbols
        Number of bars and of distinct symbols.
    warnings
        The :class:`QualityIssue` of severity ``warning``, in check order.
    outlier_z
        The robust z-score threshold used by the ``outlier`` check.
    """

    passed: bool = True
    source: str
    rows: int
    symbols: int
    outlier_z: float
    warnings: list[QualityIssue] = field(default_factory=list)

    @property
    def warning_count(self) -> int:
        return sum(w.count for w in self.warnings)

    def get(self, check: str, default: Any = None) -> Any:  # type: ignore[override]
        """The warning of ``check``, or ``default`` (``None``) if that check found nothing."""
        return next((w for w in self.warnings if w.check == check), default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "symbols": self.symbols,
            "outlier_z": self.outlier_z,
            "warnings": [w.to_dict() for w in self.warnings],
        }


@dataclass(frozen=True, kw_only=True)
class ValidationResult(Result):
    """``qcli data validate``: the files would be accepted (a refusal raises), and the report."""

    passed: bool = True
    quality: QualityReport

    @property
    def accepted(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "quality": self.quality.to_dict()}


def location_label(source_kind: str, line: int) -> str:
    """``"line 7"`` for CSV sources, ``"row 5"`` for Parquet files and frames."""
    return f"line {line}" if source_kind == "line" else f"row {line}"


def issue_from_rows(
    check: str,
    severity: str,
    rows: pl.DataFrame,
    *,
    column: str | None,
    detail: pl.Expr,
    kinds: dict[str, str],
) -> QualityIssue | None:
    """Aggregate the offending ``rows`` (which carry the location columns) into one issue."""
    if rows.height == 0:
        return None
    head = rows.head(MAX_EXAMPLES).select(
        pl.col(SOURCE_COL), pl.col(LINE_COL), detail.cast(pl.String).alias("__detail")
    )
    examples = [
        {
            "source": src,
            "location": location_label(kinds.get(src, "row"), line),
            "column": column,
            "detail": det,
        }
        for src, line, det in head.iter_rows()
    ]
    return QualityIssue(check, severity, rows.height, examples)


def printable(expr: pl.Expr, limit: int = 40) -> pl.Expr:
    """A user string for a one-line message: control characters as ``?``, cut to ``limit``."""
    return expr.cast(pl.String).str.replace_all(r"[\x00-\x1f\x7f]", "?").str.slice(0, limit)


def merge_issues(issues: list[QualityIssue]) -> list[QualityIssue]:
    """One issue per check: counts add up, examples keep the first few."""
    merged: dict[str, QualityIssue] = {}
    for issue in issues:
        prev = merged.get(issue.check)
        if prev is None:
            merged[issue.check] = issue
        else:
            merged[issue.check] = QualityIssue(
                issue.check,
                issue.severity,
                prev.count + issue.count,
                (prev.examples + issue.examples)[:MAX_EXAMPLES],
            )
    return list(merged.values())


def raise_for(issues: list[QualityIssue], source: str) -> None:
    """Raise :class:`DataValidationError` for ``issues`` (no-op when empty)."""
    if not issues:
        return
    total = sum(i.count for i in issues)
    first = issues[0]
    others = ", ".join(f"{i.check} x{i.count}" for i in issues)
    raise DataValidationError(
        f"{first.first_location()} ({first.check}); {total} error(s) in {source}: {others}",
        issues=[i.to_dict() for i in issues],
        hint="fix the rows named above; nothing was written",
    )


__all__ = [
    "LINE_COL",
    "MAX_EXAMPLES",
    "NAIVE_COL",
    "NUMERIC_COLUMNS",
    "PRICE_COLUMNS",
    "REQUIRED_COLUMNS",
    "ROW_COL",
    "SOURCE_COL",
    "QualityIssue",
    "QualityReport",
    "ValidationResult",
    "issue_from_rows",
    "location_label",
    "merge_issues",
    "printable",
    "raise_for",
]
