"""Feature drift between a baseline and a current window: PSI, two-sample KS, Jensen-Shannon.

The conventions (bins, floor, log base, distance vs divergence) are fixed and documented in
:mod:`quantcli.monitoring.drift_stats`; every result carries them in ``conventions``.

Speed: each feature is sorted once per window (the baseline once per profile); PSI and JS bin
counts are binary searches into the sorted sample and the KS statistic is one merge walk, so a
feature costs two sorts instead of scipy's sort + two searchsorted over the joint sample.
Features run on a thread pool (numpy's sort and the Numba kernel release the GIL).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from quantcli._interop import to_polars
from quantcli.errors import InputError
from quantcli.monitoring.drift_stats import (
    PSI_FLOOR,
    bin_counts,
    js_divergence,
    ks_2samp_sorted,
    psi,
    psi_band,
    shares,
)
from quantcli.monitoring.profile import (
    KEY_COLUMNS,
    BaselineProfile,
    ColumnSummary,
    FeatureProfile,
    column_as_float,
    now_utc,
    profile_from_summary,
    summarize_column,
)

CONVENTIONS = {
    "bins": "10 bins cut at the baseline deciles (numpy linear quantiles), right-closed, "
    "outer bins open-ended",
    "psi": f"sum((c - b) * ln(c / b)), shares floored at {PSI_FLOOR:g}, natural log; "
    "bands: < 0.1 none, 0.1-0.25 moderate, >= 0.25 significant",
    "ks": "two-sided two-sample statistic and p-value as scipy.stats.ks_2samp(method='auto')",
    "js": "Jensen-Shannon divergence (not distance), base 2, in [0, 1], over the same bins",
    "verdict": "a feature drifts when at least 2 of 3 tests flag it: PSI >= psi_threshold, "
    "KS p-value < ks_threshold, JS divergence >= jsd_threshold",
    "non_finite": "null, NaN and +/-inf values are counted per window and excluded from the tests",
    "std": "sample standard deviation (ddof = 1)",
}


@dataclass(frozen=True)
class FeatureDrift:
    """The drift of one feature: the three statistics, verdicts, moments and set-aside counts."""

    feature: str
    psi: float
    psi_band: str
    ks_statistic: float
    ks_pvalue: float
    js_divergence: float
    psi_drift: bool
    ks_drift: bool
    js_drift: bool
    drifted: bool
    baseline: dict[str, Any]
    current: dict[str, Any]
    edges: list[float]
    baseline_counts: list[int]
    current_counts: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "psi": self.psi,
            "psi_band": self.psi_band,
            "ks_statistic": self.ks_statistic,
            "ks_pvalue": self.ks_pvalue,
            "js_divergence": self.js_divergence,
            "verdicts": {"psi": self.psi_drift, "ks": self.ks_drift, "js": self.js_drift},
            "drifted": self.drifted,
            "baseline": self.baseline,
            "current": self.current,
            "edges": self.edges,
            "baseline_counts": self.baseline_counts,
            "current_counts": self.current_counts,
        }


@dataclass
class DriftResult:
    """The outcome of one drift check; ``features`` is sorted worst first (PSI desc, then name)."""

    features: list[FeatureDrift]
    thresholds: dict[str, float]
    timestamp: str
    baseline_source: str
    current_source: str
    conventions: dict[str, str] = field(default_factory=lambda: dict(CONVENTIONS))

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def significant_features(self) -> list[str]:
        """Features whose PSI is in the significant band (>= 0.25): the CLI's exit-1 condition."""
        return [f.feature for f in self.features if f.psi_band == "significant"]

    @property
    def drift_detected(self) -> bool:
        return bool(self.drifted_features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "baseline_source": self.baseline_source,
            "current_source": self.current_source,
            "thresholds": self.thresholds,
            "conventions": self.conventions,
            "n_features": len(self.features),
            "drifted_features": self.drifted_features,
            "n_drifted": len(self.drifted_features),
            "drift_detected": self.drift_detected,
            "significant_features": self.significant_features,
            "significant_drift": bool(self.significant_features),
            "features": [f.to_dict() for f in self.features],
        }


def _window_counts(s: ColumnSummary) -> dict[str, Any]:
    return {
        "n_rows": s.n_rows,
        "n_finite": s.n_finite,
        "n_null": s.n_null,
        "n_nan": s.n_nan,
        "n_inf": s.n_inf,
        "mean": s.mean,
        "std": s.std,
    }


def _n_workers(n_tasks: int) -> int:
    return max(1, min(n_tasks, os.cpu_count() or 1))


def _map_threads(fn: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
    if len(tasks) <= 1:
        return [fn(t) for t in tasks]
    with ThreadPoolExecutor(max_workers=_n_workers(len(tasks))) as pool:
        return list(pool.map(fn, tasks))


def _check_threshold(name: str, value: float, lo: float, hi: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and lo < value <= hi):
        raise InputError(f"`{name}` must be in ({lo:g}, {hi:g}], got `{name}={value}`")
    return value


class DriftDetector:
    """Detect feature drift with PSI, the two-sample KS test and the Jensen-Shannon divergence.

    Parameters
    ----------
    psi_threshold
        PSI at or above which the PSI test flags a feature (default 0.1, the moderate band).
    ks_threshold
        KS p-value below which the KS test flags a feature (default 0.05).
    jsd_threshold
        Jensen-Shannon divergence (base 2) at or above which the JS test flags a feature.

    A feature is *drifted* when at least two of the three tests flag it (with a million rows
    the KS test alone rejects for economically meaningless shifts; a majority keeps one noisy
    test from raising alarms). See :mod:`quantcli.monitoring.drift_stats` for the conventions.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> rng = np.random.default_rng(0)
    >>> base = pl.DataFrame({"x": rng.normal(size=5000)})
    >>> cur = pl.DataFrame({"x": rng.normal(loc=0.5, size=5000)})
    >>> res = DriftDetector().detect_feature_drift(base, cur)
    >>> res.drifted_features, res.features[0].psi_band
    (['x'], 'significant')
    """

    def __init__(
        self, psi_threshold: float = 0.1, ks_threshold: float = 0.05, jsd_threshold: float = 0.05
    ) -> None:
        self.psi_threshold = _check_threshold("psi_threshold", psi_threshold, 0.0, math.inf)
        self.ks_threshold = _check_threshold("ks_threshold", ks_threshold, 0.0, 1.0)
        self.jsd_threshold = _check_threshold("jsd_threshold", jsd_threshold, 0.0, 1.0)

    @property
    def thresholds(self) -> dict[str, float]:
        return {
            "psi_threshold": self.psi_threshold,
            "ks_threshold": self.ks_threshold,
            "jsd_threshold": self.jsd_threshold,
        }

    # -- profiles -------------------------------------------------------------------------
    def profile(
        self,
        baseline_df: pl.DataFrame,
        features: Sequence[str] | None = None,
        source: str = "frame",
    ) -> BaselineProfile:
        """The baseline profile (sorted sample, edges, counts) of ``features`` of a frame."""
        baseline_df = to_polars(baseline_df, "baseline_df")
        names = _resolve_features(baseline_df, features, "baseline")
        summaries = _summaries(baseline_df, names)
        profiles = [profile_from_summary(s, "baseline") for s in summaries]
        return BaselineProfile(
            features={p.summary.name: p for p in profiles}, source=source, created_at=now_utc()
        )

    # -- detection ------------------------------------------------------------------------
    def detect_feature_drift(
        self,
        baseline_df: pl.DataFrame | BaselineProfile,
        current_df: pl.DataFrame,
        features: Sequence[str] | None = None,
        *,
        baseline_source: str | None = None,
        current_source: str = "frame",
        timestamp: str | None = None,
    ) -> DriftResult:
        """Compare ``current_df`` against a baseline frame or a saved :class:`BaselineProfile`.

        Parameters
        ----------
        baseline_df
            The baseline window (a polars, pandas or pyarrow frame) or its profile.
        current_df
            The current window (a polars, pandas or pyarrow frame).
        features
            Feature columns to test; default every numeric column of the baseline except the
            keys ``symbol`` and ``ts``. Each must exist in both windows.
        timestamp
            The check's timestamp (ISO 8601); default now, UTC.
        """
        if not isinstance(baseline_df, BaselineProfile) and baseline_df is not None:
            baseline_df = to_polars(baseline_df, "baseline_df")
        current_df = to_polars(current_df, "current_df")
        if isinstance(baseline_df, BaselineProfile):
            profile = baseline_df
            names = list(features) if features is not None else list(profile.features)
            missing = [n for n in names if n not in profile.features]
            if missing:
                raise InputError(
                    f"feature(s) not in the baseline profile: {', '.join(missing)}",
                    hint=f"the profile has: {', '.join(profile.features)}",
                )
            base_profiles = [profile.features[n] for n in names]
            source = baseline_source or profile.source
        else:
            if not isinstance(baseline_df, pl.DataFrame):
                raise InputError(
                    f"baseline must be a polars DataFrame or a BaselineProfile, "
                    f"got {type(baseline_df).__name__}"
                )
            names = _resolve_features(baseline_df, features, "baseline")
            base_profiles = None
            source = baseline_source or "frame"
        if not isinstance(current_df, pl.DataFrame):
            raise InputError(f"current must be a polars DataFrame, got {type(current_df).__name__}")
        missing = [n for n in names if n not in current_df.columns]
        if missing:
            raise InputError(
                f"the current window lacks feature(s): {', '.join(missing)}",
                hint="both windows need the same feature columns",
            )
        if not names:
            raise InputError("no numeric feature columns to test", hint="pass features=[...]")

        if base_profiles is None:
            tasks = [("b", n, *column_as_float(baseline_df, n)) for n in names]
        else:
            tasks = []
        tasks += [("c", n, *column_as_float(current_df, n)) for n in names]
        summaries = _map_threads(lambda t: (t[0], summarize_column(t[1], t[2], t[3])), tasks)
        if base_profiles is None:
            base_profiles = [profile_from_summary(s) for w, s in summaries if w == "b"]
        current = [s for w, s in summaries if w == "c"]
        pairs = list(zip(base_profiles, current, strict=True))
        results = _map_threads(lambda bc: self._compare(bc[0], bc[1]), pairs)
        results.sort(key=lambda f: (-f.psi, f.feature))
        return DriftResult(
            features=results,
            thresholds=self.thresholds,
            timestamp=timestamp or now_utc(),
            baseline_source=source,
            current_source=current_source,
        )

    def _compare(self, base: FeatureProfile, cur: ColumnSummary) -> FeatureDrift:
        if cur.n_finite == 0:
            raise InputError(
                f"feature '{cur.name}': the current window has no finite values "
                f"({cur.n_null} null, {cur.n_nan} NaN, {cur.n_inf} infinite of {cur.n_rows} rows)",
                hint="choose a window where the feature is populated, or drop it with --features",
            )
        cur_counts = bin_counts(cur.sorted_values, base.edges)
        b_sh, c_sh = shares(base.counts), shares(cur_counts)
        psi_value = psi(b_sh, c_sh)
        jsd = js_divergence(b_sh, c_sh)
        d, p = ks_2samp_sorted(base.summary.sorted_values, cur.sorted_values)
        psi_flag = psi_value >= self.psi_threshold
        ks_flag = p < self.ks_threshold
        js_flag = jsd >= self.jsd_threshold
        return FeatureDrift(
            feature=cur.name,
            psi=psi_value,
            psi_band=psi_band(psi_value),
            ks_statistic=d,
            ks_pvalue=p,
            js_divergence=jsd,
            psi_drift=bool(psi_flag),
            ks_drift=bool(ks_flag),
            js_drift=bool(js_flag),
            drifted=int(psi_flag) + int(ks_flag) + int(js_flag) >= 2,
            baseline=_window_counts(base.summary),
            current=_window_counts(cur),
            edges=[float(e) for e in base.edges],
            baseline_counts=[int(c) for c in base.counts],
            current_counts=[int(c) for c in cur_counts],
        )


def _resolve_features(df: pl.DataFrame, features: Sequence[str] | None, where: str) -> list[str]:
    if not isinstance(df, pl.DataFrame):
        raise InputError(f"the {where} must be a polars DataFrame, got {type(df).__name__}")
    if features is None:
        return [c for c, t in df.schema.items() if c not in KEY_COLUMNS and t.is_numeric()]
    names = list(features)
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise InputError(
            f"the {where} window lacks feature(s): {', '.join(missing)}",
            hint=f"available: {', '.join(c for c in df.columns if c not in KEY_COLUMNS)}",
        )
    return names


def _summaries(df: pl.DataFrame, names: Sequence[str]) -> list[ColumnSummary]:
    tasks = [(n, *column_as_float(df, n)) for n in names]
    return _map_threads(lambda t: summarize_column(*t), tasks)


def detect_feature_drift(
    baseline_df: pl.DataFrame | BaselineProfile,
    current_df: pl.DataFrame,
    features: Sequence[str] | None = None,
    **thresholds: float,
) -> DriftResult:
    """Shortcut: ``DriftDetector(**thresholds).detect_feature_drift(baseline, current)``."""
    return DriftDetector(**thresholds).detect_feature_drift(baseline_df, current_df, features)


__all__ = ["CONVENTIONS", "DriftDetector", "DriftResult", "FeatureDrift", "detect_feature_drift"]
