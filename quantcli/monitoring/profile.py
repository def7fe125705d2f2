"""Baseline profiles: what the drift check needs from a baseline window, saved once, reused daily.

A profile keeps, per feature, the sorted finite baseline sample (for the exact KS statistic), the
decile bin edges and baseline bin counts (for PSI and JS), the mean and sample std, and the
counts of null, NaN and infinite values. A daily check then sorts and bins only the current
window. Profiles are ``.npz`` files (numpy, no pickle) with a JSON header.
"""

from __future__ import annotations

import functools
import json
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from quantcli.errors import InputError
from quantcli.monitoring._drift_nb import finite_copy, mean_std, radix_sort_finite
from quantcli.monitoring.drift_stats import bin_counts, decile_edges

PROFILE_FORMAT = "qcli-drift-profile/1"
#: Key columns of a feature table: never treated as features.
KEY_COLUMNS = ("symbol", "ts")


@dataclass(frozen=True)
class ColumnSummary:
    """One feature in one window: sorted finite values and what was set aside.

    ``n_rows`` counts every row; ``n_null + n_nan + n_inf + sorted_values.size == n_rows``.
    ``std`` is the sample standard deviation (ddof = 1; NaN below 2 values).
    """

    name: str
    sorted_values: np.ndarray
    n_rows: int
    n_null: int
    n_nan: int
    n_inf: int
    mean: float
    std: float

    @property
    def n_finite(self) -> int:
        return int(self.sorted_values.size)


@dataclass(frozen=True)
class FeatureProfile:
    """A baseline :class:`ColumnSummary` plus its decile ``edges`` (9) and bin ``counts`` (10)."""

    summary: ColumnSummary
    edges: np.ndarray
    counts: np.ndarray


#: Samples at least this long are sorted by the faster of :func:`radix_sort_finite` and numpy's
#: sort on this machine (:func:`radix_is_faster`).
RADIX_MIN_SIZE = 50_000


@functools.cache
def radix_is_faster() -> bool:
    """Whether the radix sort beats ``np.sort`` here, timed once per process on 131,072 values.

    Which one wins depends on the CPU and the numpy build (numpy's SIMD sorts); both give the
    same values in the same order (:func:`sort_finite`), so only the speed depends on it.
    """
    sample = np.random.default_rng(0).standard_normal(1 << 17)
    radix_sort_finite(sample[:16].copy())  # compiled (or loaded) before it is timed

    def best(sort) -> float:
        times = []
        for _ in range(3):
            x = sample.copy()
            t0 = time.perf_counter()
            sort(x)
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(radix_sort_finite) < best(np.ndarray.sort)


def sort_finite(values: np.ndarray) -> None:
    """Sort finite float64 values in place, ``-0.0`` before ``0.0``: the radix sort's order, so
    either sort gives the same bytes (a saved profile holds the sorted sample)."""
    if values.size >= RADIX_MIN_SIZE and radix_is_faster():
        radix_sort_finite(values)  # releases the GIL
        return
    # counted before the sort: numpy's SIMD sorts may swap the signs of equal zeros
    n_negative = int(np.count_nonzero(np.signbit(values) & (values == 0.0)))
    values.sort()  # releases the GIL too
    lo, hi = np.searchsorted(values, 0.0, side="left"), np.searchsorted(values, 0.0, side="right")
    if hi > lo:
        values[lo : lo + n_negative] = -0.0
        values[lo + n_negative : hi] = 0.0


def summarize_column(name: str, values: np.ndarray, n_null: int) -> ColumnSummary:
    """Sort the finite values of one column; count nulls, NaNs and infinities separately.

    ``values`` is the column as float64 with nulls already turned into NaN (``n_null`` of them),
    so ``NaN count = isnan(values).sum() - n_null``. A pure function: the drift engine maps it
    over features (threads; both sorts release the GIL).
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    sorted_values, n_nan_all, n_inf = finite_copy(values)
    sort_finite(sorted_values)
    mean, std = mean_std(sorted_values)
    return ColumnSummary(
        name=name,
        sorted_values=sorted_values,
        n_rows=int(values.size),
        n_null=int(n_null),
        n_nan=int(n_nan_all) - int(n_null),
        n_inf=int(n_inf),
        mean=float(mean),
        std=float(std),
    )


def column_as_float(df: pl.DataFrame, name: str) -> tuple[np.ndarray, int]:
    """Column ``name`` as a float64 array (nulls as NaN) and its null count."""
    s = df.get_column(name)
    if not s.dtype.is_numeric():
        raise InputError(
            f"feature '{name}' has dtype {s.dtype}, not numeric",
            hint="pass --features with numeric columns only",
        )
    n_null = s.null_count()
    if s.dtype != pl.Float64:
        s = s.cast(pl.Float64)
    arr = s.to_numpy()  # zero-copy for a Float64 column without nulls
    return arr, n_null


def profile_from_summary(summary: ColumnSummary, where: str = "baseline") -> FeatureProfile:
    """Cut the decile edges of a baseline summary and count its bins."""
    if summary.n_finite == 0:
        raise InputError(
            f"feature '{summary.name}': the {where} has no finite values "
            f"({summary.n_null} null, {summary.n_nan} NaN, {summary.n_inf} infinite of "
            f"{summary.n_rows} rows)",
            hint="choose a window where the feature is populated, or drop it with --features",
        )
    edges = decile_edges(summary.sorted_values)
    return FeatureProfile(summary, edges, bin_counts(summary.sorted_values, edges))


@dataclass
class BaselineProfile:
    """Per-feature baseline profiles, in feature order, with where they came from."""

    features: dict[str, FeatureProfile]
    source: str
    created_at: str

    @property
    def n_rows(self) -> int:
        return max((p.summary.n_rows for p in self.features.values()), default=0)

    def save(self, path: str | Path) -> Path:
        """Write the profile to ``path`` (``.npz``); returns the path written."""
        path = Path(path)
        meta = {
            "format": PROFILE_FORMAT,
            "source": self.source,
            "created_at": self.created_at,
            "features": [
                {
                    "name": name,
                    "n_rows": p.summary.n_rows,
                    "n_null": p.summary.n_null,
                    "n_nan": p.summary.n_nan,
                    "n_inf": p.summary.n_inf,
                    "mean": p.summary.mean,
                    "std": p.summary.std,
                }
                for name, p in self.features.items()
            ],
        }
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        for i, p in enumerate(self.features.values()):
            arrays[f"sorted_{i}"] = p.summary.sorted_values
            arrays[f"edges_{i}"] = p.edges
            arrays[f"counts_{i}"] = p.counts
        path.parent.mkdir(parents=True, exist_ok=True)
        # np.savez appends ".npz" to a name without it; write through a handle to keep the name.
        with path.open("wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> BaselineProfile:
        """Read a profile written by :meth:`save`; a wrong or damaged file is an InputError."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != PROFILE_FORMAT:
                    raise InputError(
                        f"{path}: not a drift profile (format {meta.get('format')!r}, "
                        f"expected {PROFILE_FORMAT!r})"
                    )
                features: dict[str, FeatureProfile] = {}
                for i, f in enumerate(meta["features"]):
                    summary = ColumnSummary(
                        name=f["name"],
                        sorted_values=z[f"sorted_{i}"],
                        n_rows=f["n_rows"],
                        n_null=f["n_null"],
                        n_nan=f["n_nan"],
                        n_inf=f["n_inf"],
                        mean=f["mean"] if f["mean"] is not None else float("nan"),
                        std=f["std"] if f["std"] is not None else float("nan"),
                    )
                    features[f["name"]] = FeatureProfile(summary, z[f"edges_{i}"], z[f"counts_{i}"])
        except FileNotFoundError:
            raise InputError(f"{path}: profile file not found") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{path}: not a readable drift profile ({exc})") from None
        return cls(features=features, source=meta["source"], created_at=meta["created_at"])


def now_utc() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
