"""Combinatorial purged cross-validation (Lopez de Prado, AFML ch. 7 and 12).

The timeline is cut into ``n_groups`` contiguous groups of **unique timestamps**
(``np.array_split`` convention: the first ``n_unique % n_groups`` groups hold one more
timestamp), so the rows of a panel that share a timestamp always fall in the same group. Each of
the ``C(n_groups, n_test_groups)`` splits tests on one combination of groups and trains on the
rest, minus:

* **purged** rows: a training row whose label interval ``[ts, label_end]`` overlaps the label
  interval of any test row (closed intervals, AFML 7.4.1). Without ``label_end`` a label ends at
  its own timestamp and nothing needs purging;
* the **purge gap**: the ``ceil(purge_pct * n_unique)`` unique timestamps right before each test
  block;
* the **embargo**: the ``ceil(embargo_pct * n_unique)`` unique timestamps right after each test
  block (AFML 7.4.2).

Adjacent test groups form one test block. Every group is tested in ``C(N-1, k-1)`` splits, and
the test predictions recombine into ``n_paths = k/N * C(N, k)`` full backtest paths
(:meth:`CombinatorialPurgedCV.path_splits`).

Two parametrizations name the same splitter. ``n_groups``/``n_test_groups`` are ``N`` and
``k``. The scikit-learn style ``n_splits``/``test_size`` map to them as ``N = n_splits`` (the
number of groups, as ``n_splits`` is the number of folds of ``KFold``) and ``k = test_size * N``
for a fraction ``test_size`` (it must come out whole: ``0.3`` with ``N = 10`` is ``k = 3``), or
``k = test_size`` for an integer. The number of splits is then ``C(N, k)``, which
:meth:`CombinatorialPurgedCV.get_n_splits` returns exactly (``n_splits=10, test_size=0.3``:
``C(10, 3) = 120`` splits, ``C(9, 2) = 36`` paths).

The index arithmetic runs in Numba kernels (:mod:`quantcli.backtest._nb`); this class validates
the parameters and the inputs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from quantcli.backtest import _nb
from quantcli.errors import InputError

MAX_SPLITS = 10_000


def _ceil_share(pct: float, n: int) -> int:
    """``ceil(pct * n)`` without float noise (``0.01 * 300`` is 3, not 4)."""
    return math.ceil(round(pct * n, 9))


def _as_time_array(values: Any, name: str) -> tuple[np.ndarray, bool]:
    """``values`` as int64 plus whether they were datetimes (converted to ns since the epoch)."""
    module = type(values).__module__
    if module.startswith("polars"):
        import polars as pl

        s = values if isinstance(values, pl.Series) else pl.Series(values)
        if s.null_count():
            row = int(s.is_null().arg_true()[0])
            raise InputError(
                f"`{name}` has a null at row {row}",
                hint="drop the rows without a label (the last horizon bars of each symbol)",
            )
        if s.dtype == pl.Date:
            s = s.cast(pl.Datetime("ns"))
        if isinstance(s.dtype, pl.Datetime):
            return s.dt.epoch("ns").to_numpy().astype(np.int64, copy=False), True
        values = s.to_numpy()
    elif module.startswith("pandas"):
        import pandas as pd

        if isinstance(getattr(values, "dtype", None), pd.DatetimeTZDtype) or (
            np.issubdtype(np.asarray(values).dtype, np.datetime64)
        ):
            idx = pd.DatetimeIndex(values)
            if idx.hasnans:
                row = int(np.flatnonzero(idx.isna())[0])
                raise InputError(f"`{name}` has a missing time (NaT) at row {row}")
            return np.asarray(idx.asi8, dtype=np.int64), True
        values = np.asarray(values)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"`{name}` must be one-dimensional, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.datetime64):
        nat = np.isnat(arr)
        if nat.any():
            raise InputError(f"`{name}` has a missing time (NaT) at row {int(np.argmax(nat))}")
        return arr.astype("datetime64[ns]").view(np.int64), True
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False), False
    raise InputError(
        f"`{name}` must hold datetimes or integers, got dtype {arr.dtype}",
        hint="pass timestamps as datetime64 / a polars Datetime column, or integer bar numbers",
    )


class CombinatorialPurgedCV:
    """Combinatorial purged cross-validation with label-interval purging and an embargo.

    scikit-learn compatible (``split(X, y, groups)``, ``get_n_splits``), so it can be passed as
    ``cv=`` to ``cross_val_score``; the purge needs ``label_end`` and ``timestamps``, passed as
    keywords or found as the ``label_end`` and ``ts`` columns of a polars ``X``. A pandas ``X``
    carries its time in its index (see :meth:`split`).

    Parameters
    ----------
    n_groups : int, default 10
        ``N``, the number of contiguous groups of unique timestamps (at least 2).
    n_test_groups : int, default 2
        ``k``, the number of groups tested in each split (``1 <= k < N``).
    n_splits : int, optional
        The scikit-learn spelling of ``n_groups`` (``N = n_splits``); not together with it.
    test_size : float or int, optional
        The share of the groups tested in each split, ``k = test_size * N`` (must be whole), or
        an integer ``k``; the scikit-learn spelling of ``n_test_groups``, not together with it.
    embargo_pct : float, default 0.01
        Share of the unique timestamps embargoed after each test block, in ``[0, 1)``; the
        embargo is ``ceil(embargo_pct * n_unique)`` timestamps.
    purge_pct : float, default 0.0
        Share of the unique timestamps dropped as a fixed gap before each test block, in
        ``[0, 1)``; added to (not replacing) the label-interval purge.

    Examples
    --------
    Ten bars of one asset, labels ending two bars later, N=5 groups of two bars, k=2:

    >>> import numpy as np
    >>> cv = CombinatorialPurgedCV(n_groups=5, n_test_groups=2, embargo_pct=0.1)
    >>> ts = np.arange(10)
    >>> train, test = next(cv.split(np.zeros((10, 1)), timestamps=ts, label_end=ts + 2))
    >>> test.tolist(), train.tolist()
    ([0, 1, 2, 3], [6, 7, 8, 9])
    >>> cv.get_n_splits(), cv.n_paths
    (10, 4)

    The scikit-learn parametrization: ten groups, three of them tested in each split.

    >>> cv = CombinatorialPurgedCV(n_splits=10, test_size=0.3, purge_pct=0.05, embargo_pct=0.01)
    >>> cv.n_groups, cv.n_test_groups, cv.get_n_splits(), cv.n_paths
    (10, 3, 120, 36)
    """

    def __init__(
        self,
        n_groups: int | None = None,
        n_test_groups: int | None = None,
        embargo_pct: float = 0.01,
        purge_pct: float = 0.0,
        *,
        n_splits: int | None = None,
        test_size: float | int | None = None,
    ) -> None:
        if n_splits is not None:
            if n_groups is not None:
                raise InputError(
                    f"give `n_groups` or `n_splits`, not both, got `n_groups={n_groups!r}` and "
                    f"`n_splits={n_splits!r}`.",
                    hint="n_splits is the number of groups N (as in KFold)",
                )
            if not isinstance(n_splits, int | np.integer) or isinstance(n_splits, bool):
                raise InputError(f"`n_splits` must be an integer, got `n_splits={n_splits!r}`.")
            n_groups = int(n_splits)
        if n_groups is None:
            n_groups = 10
        if test_size is not None:
            if n_test_groups is not None:
                raise InputError(
                    f"give `n_test_groups` or `test_size`, not both, got "
                    f"`n_test_groups={n_test_groups!r}` and `test_size={test_size!r}`."
                )
            n_test_groups = _test_groups_of(test_size, n_groups)
        if n_test_groups is None:
            n_test_groups = 2
        if not isinstance(n_groups, int | np.integer) or n_groups < 2:
            raise InputError(
                f"`n_groups` must be an integer of at least 2, got `n_groups={n_groups!r}`."
            )
        if not isinstance(n_test_groups, int | np.integer) or not 1 <= n_test_groups < n_groups:
            raise InputError(
                f"`n_test_groups` must be an integer in [1, n_groups-1] = [1, {n_groups - 1}], "
                f"got `n_test_groups={n_test_groups!r}`."
            )
        for name, value in (("embargo_pct", embargo_pct), ("purge_pct", purge_pct)):
            if not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
                raise InputError(
                    f"`{name}` must be a fraction in [0, 1), got `{name}={value!r}`.",
                    hint="0.01 means 1 % of the unique timestamps",
                )
        n_splits = math.comb(int(n_groups), int(n_test_groups))
        if n_splits > MAX_SPLITS:
            raise InputError(
                f"`n_groups={n_groups}` with `n_test_groups={n_test_groups}` gives {n_splits} "
                f"splits, more than the limit of {MAX_SPLITS}.",
                hint="use fewer groups or fewer test groups (N=10, k=2 gives 45 splits)",
            )
        self.n_groups = int(n_groups)
        self.n_test_groups = int(n_test_groups)
        self.embargo_pct = float(embargo_pct)
        self.purge_pct = float(purge_pct)

    def __repr__(self) -> str:
        return (
            f"CombinatorialPurgedCV(n_groups={self.n_groups}, n_test_groups={self.n_test_groups},"
            f" embargo_pct={self.embargo_pct}, purge_pct={self.purge_pct})"
        )

    # -- combinatorics ---------------------------------------------------------------------

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """``C(n_groups, n_test_groups)``."""
        return math.comb(self.n_groups, self.n_test_groups)

    @property
    def n_paths(self) -> int:
        """``k/N * C(N, k) = C(N-1, k-1)``: the number of full backtest paths."""
        return math.comb(self.n_groups - 1, self.n_test_groups - 1)

    @property
    def test_groups(self) -> list[tuple[int, ...]]:
        """The test groups of each split, in split order (lexicographic combinations)."""
        return list(itertools.combinations(range(self.n_groups), self.n_test_groups))

    def path_splits(self) -> np.ndarray:
        """Which split supplies each group of each path: an int64 array ``(n_paths, n_groups)``.

        Group ``g`` is tested in ``n_paths`` splits; path ``p`` takes the ``p``-th of them (in
        split order). So each path covers every group exactly once, and each (split, test group)
        pair is used by exactly one path.
        """
        out = np.empty((self.n_paths, self.n_groups), dtype=np.int64)
        seen = np.zeros(self.n_groups, dtype=np.int64)
        for split, groups in enumerate(self.test_groups):
            for g in groups:
                out[seen[g], g] = split
                seen[g] += 1
        return out

    def path_ids(self) -> np.ndarray:
        """For each split, the path each of its test groups belongs to: ``(n_splits, k)``."""
        paths = self.path_splits()
        out = np.empty((self.get_n_splits(), self.n_test_groups), dtype=np.int64)
        for split, groups in enumerate(self.test_groups):
            for j, g in enumerate(groups):
                out[split, j] = int(np.flatnonzero(paths[:, g] == split)[0])
        return out

    # -- the data side ---------------------------------------------------------------------

    def _prepare(self, X: Any, label_end: Any, timestamps: Any) -> dict[str, Any]:
        n = _n_rows(X)
        order = None
        if type(X).__module__.startswith("pandas"):
            timestamps, label_end, from_index = _pandas_times(X, label_end, timestamps)
            if from_index:
                # a (symbol, ts) panel is symbol-major: split in time order, report positions
                # of X as given so that X.iloc[train_idx] picks the right rows
                ts_raw, _ = _as_time_array(timestamps, "timestamps")
                if ts_raw.shape[0] > 1 and bool(np.any(ts_raw[1:] < ts_raw[:-1])):
                    order = np.argsort(ts_raw, kind="stable")
                    timestamps = np.asarray(timestamps)[order]
                    if label_end is not None:
                        label_end = np.asarray(label_end)[order]
        if timestamps is None and label_end is None and _has_columns(X, "ts", "label_end"):
            timestamps, label_end = X["ts"], X["label_end"]
        elif timestamps is None and _has_columns(X, "ts"):
            timestamps = X["ts"]
        if timestamps is None:
            ts, ts_is_time = np.arange(n, dtype=np.int64), False
        else:
            ts, ts_is_time = _as_time_array(timestamps, "timestamps")
        if ts.shape[0] != n:
            raise InputError(f"`timestamps` has {ts.shape[0]} rows but X has {n}")
        if label_end is None:
            le = ts
        else:
            le, le_is_time = _as_time_array(label_end, "label_end")
            if le_is_time != ts_is_time:
                raise InputError(
                    "`label_end` and `timestamps` must both be datetimes or both be integers"
                    + ("" if timestamps is not None else " (without timestamps, rows are bars)"),
                    hint="pass timestamps= with the same kind of values as label_end",
                )
            if le.shape[0] != n:
                raise InputError(f"`label_end` has {le.shape[0]} rows but X has {n}")
        unsorted, bad, max_span, n_unique = _nb.scan_times(ts, le)
        if unsorted >= 0:
            raise InputError(
                f"`timestamps` must be sorted (non-decreasing): row {unsorted} is earlier than "
                f"row {unsorted - 1}",
                hint="sort the frame by ts (then symbol) before cross-validating",
            )
        if bad >= 0:
            raise InputError(
                f"`label_end` is earlier than its timestamp at row {bad}",
                hint="label_end is the time the label is known: at or after ts",
            )
        if n_unique < self.n_groups:
            raise InputError(
                f"{n_unique} unique timestamps cannot make `n_groups={self.n_groups}` groups",
                hint="use fewer groups or more data",
            )
        ustart = _nb.unique_starts(ts)
        # np.array_split convention on the unique timestamps
        sizes = np.full(self.n_groups, n_unique // self.n_groups, dtype=np.int64)
        sizes[: n_unique % self.n_groups] += 1
        gstart = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        purge_n = _ceil_share(self.purge_pct, n_unique)
        embargo_n = _ceil_share(self.embargo_pct, n_unique)
        if int(sizes.min()) <= purge_n + embargo_n:
            raise InputError(
                f"groups of {int(sizes.min())} timestamps are not larger than the purge gap "
                f"({purge_n}) plus the embargo ({embargo_n}) of {n_unique} unique timestamps",
                hint="lower `n_groups`, `embargo_pct` or `purge_pct`, or use more data",
            )
        return {
            "ts": ts,
            "le": le,
            "ustart": ustart,
            "gstart": gstart,
            "gmax": _nb.group_max_label_end(le, ustart, gstart),
            "purge_n": purge_n,
            "embargo_n": embargo_n,
            "max_span": int(max_span),
            "order": order,
        }

    def split(
        self,
        X: Any,
        y: Any = None,
        groups: Any = None,
        *,
        label_end: Any = None,
        timestamps: Any = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, test_idx)``, sorted int64 row positions, for every split.

        Parameters
        ----------
        X : array-like or polars.DataFrame, shape (n_rows, ...)
            The samples, sorted by time. A polars frame with ``ts`` / ``label_end`` columns
            supplies ``timestamps`` / ``label_end`` when they are not given.
        y, groups
            Ignored (scikit-learn signature).
        label_end : array-like, optional
            When each row's label is known (datetimes, or integers in the unit of
            ``timestamps``); ``label_end >= ts``. Default: the row's own timestamp.
        timestamps : array-like, optional
            Each row's time, non-decreasing; rows may share a timestamp (a panel). Default:
            each row is its own bar ``0, 1, 2, ...`` -- except for a pandas ``X``, see below.

        Notes
        -----
        A pandas ``X`` must carry its time: a ``DatetimeIndex``, or a ``MultiIndex`` with a
        ``ts`` level (a ``(symbol, ts)`` panel; rows may come in any order, the splits are made
        in time order and the indices are positions in ``X`` as given, for ``X.iloc``), or a
        ``ts`` column, or ``timestamps=``. Otherwise :class:`~quantcli.errors.InputError` says
        so, instead of treating every row as its own bar. ``label_end`` comes from the keyword,
        a ``label_end`` index level or a ``label_end`` column.
        """
        p = self._prepare(X, label_end, timestamps)
        order = p["order"]
        for groups_ in self.test_groups:
            is_test = np.zeros(self.n_groups, dtype=np.bool_)
            is_test[list(groups_)] = True
            train, test = _nb.split_indices(
                p["ts"],
                p["le"],
                p["ustart"],
                p["gstart"],
                p["gmax"],
                is_test,
                p["purge_n"],
                p["embargo_n"],
                p["max_span"],
            )
            if order is None:
                yield train, test
            else:
                yield np.sort(order[train]), np.sort(order[test])

    def sample_groups(self, X: Any, *, timestamps: Any = None) -> np.ndarray:
        """The group (0 .. n_groups-1) of every row, as int64."""
        p = self._prepare(X, None, timestamps)
        out = np.empty(p["ts"].shape[0], dtype=np.int64)
        rows = p["ustart"][p["gstart"]]
        for g in range(self.n_groups):
            out[rows[g] : rows[g + 1]] = g
        if p["order"] is not None:
            unsorted = np.empty_like(out)
            unsorted[p["order"]] = out
            return unsorted
        return out


def _test_groups_of(test_size: Any, n_groups: int) -> int:
    """``k`` from ``test_size``: ``test_size * n_groups`` for a fraction, else the integer."""
    if isinstance(test_size, bool) or not isinstance(test_size, int | float | np.number):
        raise InputError(
            f"`test_size` must be a fraction in (0, 1) or an integer number of test groups, "
            f"got `test_size={test_size!r}`."
        )
    if isinstance(test_size, int | np.integer):
        return int(test_size)
    if not 0.0 < float(test_size) < 1.0:
        raise InputError(
            f"`test_size` must be a fraction in (0, 1) or an integer, got `test_size={test_size}`."
        )
    k = float(test_size) * n_groups
    if abs(k - round(k)) > 1e-9:
        lo, hi = math.floor(k), math.ceil(k)
        raise InputError(
            f"`test_size={test_size}` of `n_splits={n_groups}` groups is {k:g} groups, not a "
            "whole number.",
            hint=f"use test_size={lo / n_groups:g} or {hi / n_groups:g} ({lo} or {hi} test groups)",
        )
    return round(k)


def _pandas_times(X: Any, label_end: Any, timestamps: Any) -> tuple[Any, Any, bool]:
    """``(timestamps, label_end, from_index)`` of a pandas ``X``; raises if it carries no time."""
    import pandas as pd

    index = X.index
    from_index = False
    if timestamps is None:
        if isinstance(index, pd.MultiIndex):
            names = list(index.names)
            if "ts" in names:
                timestamps, from_index = index.get_level_values("ts"), True
        elif isinstance(index, pd.DatetimeIndex):
            timestamps, from_index = index, True
        if timestamps is None and _has_columns(X, "ts"):
            timestamps = X["ts"]
        if timestamps is None:
            raise InputError(
                f"`X` carries no time: its index is a {type(index).__name__}"
                + (f" with levels {list(index.names)}" if isinstance(index, pd.MultiIndex) else "")
                + ", and CPCV needs each row's timestamp to group, purge and embargo",
                hint="index X by its timestamps (a DatetimeIndex), or by a (symbol, ts) "
                "MultiIndex for a panel: X.set_index(['symbol', 'ts']); or pass timestamps=",
            )
    if label_end is None:
        if isinstance(index, pd.MultiIndex) and "label_end" in index.names:
            label_end = index.get_level_values("label_end")
        elif _has_columns(X, "label_end"):
            label_end = X["label_end"]
    return _pandas_ns(timestamps), _pandas_ns(label_end), from_index


def _pandas_ns(values: Any) -> Any:
    """pandas datetimes (naive or tz-aware) as ``datetime64[ns]`` UTC; anything else as is."""
    if values is None or not _is_datetime(values):
        return values
    import pandas as pd

    idx = pd.DatetimeIndex(values)
    if idx.hasnans:
        row = int(np.flatnonzero(idx.isna())[0])
        raise InputError(f"`X` has a missing time (NaT) at row {row}")
    return idx.asi8.view("datetime64[ns]")


def _is_datetime(values: Any) -> bool:
    import pandas as pd

    dtype = getattr(values, "dtype", None)
    return isinstance(dtype, pd.DatetimeTZDtype) or (
        dtype is not None and np.issubdtype(np.dtype(dtype), np.datetime64)
    )


def _n_rows(X: Any) -> int:
    shape = getattr(X, "shape", None)
    if shape is not None:
        return int(shape[0])
    return len(X)


def _has_columns(X: Any, *names: str) -> bool:
    columns = getattr(X, "columns", None)
    return columns is not None and all(name in list(columns) for name in names)
