"""Cross-sectional kinds: a feature's rank and z-score across symbols at each timestamp.

Scope ``"cross_section"`` (see :mod:`quantcli.features.kinds._base`): the value of a row
depends on every symbol's row at the same ``ts``, not on the symbol's history, so these kinds
have no per-symbol state. They are computed after the per-symbol stage, over the rows kept at
that ``ts`` (each symbol past the set's warm-up) whose input is defined (not NaN):

* ``cs_rank``: the fractional rank ``(r - 1) / (m - 1)`` in ``[0, 1]``, ``r`` the average rank
  (ties share it) among ``m`` defined values; 0.5 when ``m == 1``.
* ``cs_zscore``: ``(x - mean) / std`` over the ``m`` values, population std; 0 when the std is
  below 1e-8 or ``m == 1``.

The kernel is :func:`cross_section_kernel` over rows sorted by ``ts`` (``starts`` delimits the
timestamps): ``kernel(values, starts, params, out)``, where ``params[0]`` is 0 for rank, 1 for
z-score. With the kernel engine, :mod:`quantcli.features.cross_section_stage` runs it over every
symbol's rows (a build: the stored rows at each timestamp it touched); the Polars twins
compute the same values over one frame (to 1e-12: other summation order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from numba import njit

from quantcli.features.kinds._base import Kind, Param, register
from quantcli.features.polars_graph import _POS, _ZERO, PolarsGraph

OF = Param("of", str, min=None, doc="the feature compared across symbols")


@njit(cache=True, nogil=True)
def cross_section_kernel(values, starts, params, out):
    mode = int(params[0])
    for g in range(starts.shape[0] - 1):
        a = starts[g]
        b = starts[g + 1]
        m = 0
        total = 0.0
        for i in range(a, b):
            if values[i] == values[i]:
                m += 1
                total += values[i]
        if mode == 0:
            # sorted once per timestamp (O(m log m)): a run of e equal values after p smaller
            # ones shares the 1-based average rank p + (e + 1) / 2
            defined = np.empty(m, dtype=np.int64)
            k = 0
            for i in range(a, b):
                if values[i] == values[i]:
                    defined[k] = i
                    k += 1
                else:
                    out[i] = np.nan
            order = defined[np.argsort(values[defined], kind="mergesort")]
            p = 0
            while p < m:
                e = 1
                while p + e < m and values[order[p + e]] == values[order[p]]:
                    e += 1
                rank = p + (e + 1) / 2.0
                for j in range(p, p + e):
                    out[order[j]] = 0.5 if m == 1 else (rank - 1.0) / (m - 1)
                p += e
        else:
            mean = total / m if m > 0 else np.nan
            ss = 0.0
            for i in range(a, b):
                if values[i] == values[i]:
                    d = values[i] - mean
                    ss += d * d
            std = np.sqrt(ss / m) if m > 0 else np.nan
            for i in range(a, b):
                v = values[i]
                if v != v:
                    out[i] = np.nan
                elif m == 1 or std < 1e-8:
                    out[i] = 0.0
                else:
                    out[i] = (v - mean) / std


def _kept(g: PolarsGraph, name: str) -> pl.Expr:
    """``name`` on the rows a build keeps (past the set's warm-up), null before: the table holds
    no warm-up row, so a symbol still in its warm-up takes no part in a cross-section."""
    # NaN is undefined, as in the kernel (Polars would count it and rank it last)
    return pl.when(pl.col(_POS) >= getattr(g, "warmup", 0)).then(pl.col(name).fill_nan(None))


def _rank_polars(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]):
    x = _kept(g, src["of"])
    m = x.count().over("ts")
    r = x.rank("average").over("ts")
    value = pl.when(m == 1).then(0.5).otherwise((r - 1.0) / (m - 1).cast(pl.Float64))
    return {"value": (pl.when(x.is_not_null()).then(value), g.first[src["of"]])}


def _zscore_polars(g: PolarsGraph, p: dict[str, Any], src: dict[str, str]):
    x = _kept(g, src["of"])
    mean = x.mean().over("ts")
    std = x.std(ddof=0).over("ts")
    m = x.count().over("ts")
    value = pl.when((m == 1) | (std < _ZERO)).then(0.0).otherwise((x - mean) / std)
    return {"value": (pl.when(x.is_not_null()).then(value), g.first[src["of"]])}


def _register(name: str, mode: int, polars, doc: str) -> None:
    register(
        Kind(
            name=name,
            params=(OF,),
            inputs=("of",),
            lookback=lambda p: 0,
            kernel=cross_section_kernel,
            state_size=lambda p: 0,
            init_state=lambda p: np.zeros(0),
            polars=polars,
            scope="cross_section",
            doc=doc,
            extra={"mode": mode},
        )
    )


_register("cs_rank", 0, _rank_polars, "fractional rank of `of` across symbols at each ts, 0..1")
_register("cs_zscore", 1, _zscore_polars, "z-score of `of` across symbols at each ts")
