"""Volume kinds: Chaikin's accumulation/distribution line (AD) and oscillator (ADOSC), each
TA-Lib's function operation for operation, as one stateful pass (``state[0]`` counts bars)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from numba import njit

from quantcli.features.kinds import momentum_polars as twins
from quantcli.features.kinds._base import Param
from quantcli.features.kinds._steps import NAN, fma
from quantcli.features.kinds.talib_overlap import _talib, kind

HLCV = ("high", "low", "close", "volume")


@njit(cache=True, nogil=True)
def _ad_step(h, lo, c, v, ad):
    """AD after one bar: the money-flow volume ``((c - lo) - (h - c)) / (h - lo) * v`` is added
    when the bar has a range (a bar with ``h == lo`` adds nothing)."""
    rng = h - lo
    if rng > 0.0:
        ad += (((c - lo) - (h - c)) / rng) * v
    return ad


@njit(cache=True, nogil=True)
def ad_kernel(inputs, params, state, out):
    high, low, close, volume = inputs[0], inputs[1], inputs[2], inputs[3]
    ad = state[1]
    for i in range(close.shape[0]):
        ad = _ad_step(high[i], low[i], close[i], volume[i], ad)
        out[0, i] = ad
    state[1] = ad
    state[0] += close.shape[0]


kind(
    "ad",
    params=(),
    inputs=HLCV,
    lookback=lambda p: 0,
    kernel=ad_kernel,
    size=lambda p: 2,
    polars=twins.ad,
    talib=_talib("AD", *HLCV),
    talib_name="AD",
    doc="Chaikin accumulation/distribution line (cumulative money-flow volume)",
)


@njit(cache=True, nogil=True)
def adosc_kernel(inputs, params, state, out):
    # state [j, ad, fast EMA, slow EMA]; both EMAs start at the first AD value (TA-Lib's seed)
    fast = int(params[0])
    slow = int(params[1])
    high, low, close, volume = inputs[0], inputs[1], inputs[2], inputs[3]
    fk = 2.0 / (fast + 1)
    sk = 2.0 / (slow + 1)
    j = int(state[0])
    s1, s2, s3 = state[1], state[2], state[3]
    first = max(fast, slow) - 1
    for i in range(close.shape[0]):
        ad = _ad_step(high[i], low[i], close[i], volume[i], s1)
        s1 = ad
        if j == 0:
            s2 = ad
            s3 = ad
        else:
            s2 = fma(1.0 - fk, s2, fk * ad)
            s3 = fma(1.0 - sk, s3, sk * ad)
        out[0, i] = s2 - s3 if j >= first else NAN
        j += 1
    state[1], state[2], state[3] = s1, s2, s3
    state[0] = j


def _slowest(p: Mapping[str, Any]) -> int:
    return max(int(p["fast"]), int(p["slow"]))


kind(
    "adosc",
    params=(
        Param("fast", int, min=2, default=3, doc="fast EMA bars"),
        Param("slow", int, min=2, default=10, doc="slow EMA bars"),
    ),
    inputs=HLCV,
    lookback=lambda p: _slowest(p) - 1,
    kernel=adosc_kernel,
    size=lambda p: 4,
    polars=twins.adosc,
    talib=_talib("ADOSC", *HLCV),
    talib_name="ADOSC",
    doc="Chaikin oscillator: EMA(AD, fast) - EMA(AD, slow), both seeded with the first AD",
)
