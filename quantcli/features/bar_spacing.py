"""Do the stored bars match the feature set's declared bar interval?

Two findings, both warnings (the build still runs; the numbers would be mis-annualized or the
labels mis-timed, so the user must see them):

* ``spacing``: a symbol whose median spacing between bars differs from the declared interval by
  more than a factor 1.5 (daily bars under a ``frequency = "1h"`` set, or the reverse;
  :func:`quantcli.data.spacing.mismatched_spacing`);
* ``gap``: missing bars against the interval (:func:`quantcli.data.validation.check_spacing`,
  which does not count weekends or single holidays).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from quantcli.data.spacing import (
    SPACING_FACTOR,
    SpacingReport,
    mismatched_spacing,
    stored_bar_times,
)
from quantcli.data.validation import check_spacing
from quantcli.errors import InputError, NotFoundError
from quantcli.features.definitions import FeatureSet, load_feature_set

__all__ = [
    "SPACING_FACTOR",
    "SpacingReport",
    "check_bar_spacing",
    "check_stored_bars",
    "declared_interval",
]


def declared_interval(
    feature_set: str | None, interval: str | None, features_config: dict[str, Any]
) -> tuple[str | None, str]:
    """The bar interval ingested bars are checked against, and who declared it.

    ``feature_set``'s frequency if given (``--feature-set``), else ``interval`` (``--interval``),
    else the frequency of the configured feature set (``[features] feature_set``, by default
    ``technical_v1``); ``(None, "")`` when that set cannot be found or loaded, since a plain
    ingest must not fail on a declaration it was not asked about.
    """
    if feature_set is not None:
        fs = load_feature_set(feature_set)
        return fs.frequency, f"the feature set {fs.name}"
    if interval is not None:
        return interval, "--interval"
    name = str(features_config.get("feature_set", "technical_v1"))
    try:
        return load_feature_set(name).frequency, f"the feature set {name}"
    except (NotFoundError, InputError):
        return None, ""


def check_bar_spacing(bars: pl.DataFrame, fs: FeatureSet, *, gaps: bool = True) -> SpacingReport:
    """Compare ``bars`` (columns ``symbol, ts``) with ``fs``'s declared interval; ``gaps=False``
    skips the gap count (ingest with ``--interval`` reports gaps itself)."""
    mismatched = mismatched_spacing(bars, fs.interval)
    issue = None
    if gaps and not mismatched:
        issue = check_spacing(bars.select("symbol", "ts"), fs.interval)
    return SpacingReport(
        frequency=fs.frequency,
        mismatched=mismatched,
        gaps=issue.count if issue else 0,
        gap_examples=[e["detail"] for e in issue.examples] if issue else [],
        declared_by=f"the feature set {fs.name}",
    )


def check_stored_bars(
    store: Any, fs: FeatureSet, symbols: list[str] | None = None, *, gaps: bool = True
) -> SpacingReport:
    """:func:`check_bar_spacing` of the offline store's ``bars`` (only ``symbols`` if given)."""
    return check_bar_spacing(stored_bar_times(store, symbols), fs, gaps=gaps)
