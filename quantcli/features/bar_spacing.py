"""Do the stored bars match the feature set's declared bar interval?

Two findings, both warnings (the build still runs; the numbers would be mis-annualized or the
labels mis-timed, so the user must see them):

* ``spacing``: a symbol whose median spacing between bars differs from the declared interval by
  more than a factor 1.5 (daily bars under a ``frequency = "1h"`` set, or the reverse);
* ``gap``: missing bars against the interval (:func:`quantcli.data.validation.check_spacing`,
  which does not count weekends or single holidays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from quantcli.features.definitions import FeatureSet

#: How far a symbol's median bar spacing may stray from the declared interval.
SPACING_FACTOR = 1.5


@dataclass(frozen=True)
class SpacingReport:
    """Symbols whose bars contradict the interval, and the gap finding."""

    frequency: str
    mismatched: dict[str, str] = field(default_factory=dict)  # symbol -> its median spacing
    gaps: int = 0
    gap_examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.gaps

    def messages(self) -> list[str]:
        out = []
        if self.mismatched:
            shown = ", ".join(f"{s} ({d})" for s, d in list(self.mismatched.items())[:5])
            more = len(self.mismatched) - 5
            out.append(
                f"bars of {len(self.mismatched)} symbol(s) are not spaced {self.frequency} as the "
                f"feature set declares (median spacing): {shown}"
                + (f" and {more} more" if more > 0 else "")
            )
        if self.gaps:
            out.append(
                f"{self.gaps} gap(s) against the {self.frequency} interval, e.g. "
                + "; ".join(self.gap_examples[:2])
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"frequency": self.frequency, "mismatched": self.mismatched, "gaps": self.gaps,
                "messages": self.messages()}  # fmt: skip


def check_bar_spacing(bars: pl.DataFrame, fs: FeatureSet, *, gaps: bool = True) -> SpacingReport:
    """Compare ``bars`` (columns ``symbol, ts``) with ``fs``'s declared interval; ``gaps=False``
    skips the gap count (ingest with ``--interval`` reports gaps itself)."""
    from quantcli.data.validation import check_spacing

    interval = fs.interval
    medians = (
        bars.select("symbol", "ts")
        .sort("symbol", "ts")
        .with_columns(pl.col("ts").diff().over("symbol").alias("step"))
        .group_by("symbol", maintain_order=True)
        .agg(pl.col("step").drop_nulls().median())
        .drop_nulls("step")
    )
    mismatched = {}
    for symbol, step in medians.iter_rows():
        ratio = step / interval
        if ratio > SPACING_FACTOR or ratio < 1 / SPACING_FACTOR:
            mismatched[str(symbol)] = str(step)
    issue = None
    if gaps and not mismatched:
        issue = check_spacing(bars.select("symbol", "ts"), interval)
    return SpacingReport(
        frequency=fs.frequency,
        mismatched=mismatched,
        gaps=issue.count if issue else 0,
        gap_examples=[e["detail"] for e in issue.examples] if issue else [],
    )


def check_stored_bars(
    store: Any, fs: FeatureSet, symbols: list[str] | None = None, *, gaps: bool = True
) -> SpacingReport:
    """:func:`check_bar_spacing` of the offline store's ``bars`` (only ``symbols`` if given)."""
    sql = "SELECT symbol, ts FROM bars"
    params: list[Any] = []
    if symbols:
        sql += " WHERE symbol IN (SELECT unnest(?))"
        params.append(list(symbols))
    return check_bar_spacing(store.con.sql(sql, params=params).pl(), fs, gaps=gaps)
