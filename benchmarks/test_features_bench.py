"""Feature engine throughput against TA-Lib, and the 25 M bar build's memory and scaling.

* ``compute_features`` (29 columns, sort check, the lazy plan of the default ``kernel`` engine:
  one ``map_batches`` expression per indicator group running the Numba kernels on contiguous
  symbol blocks, a lazy warm-up filter) against TA-Lib called per symbol for the same 29
  outputs, in the same run (interleaved rounds), on the seeded synthetic universe; the outputs
  must be bit-identical. Goal (issue 3): ratio >= 1.0 on 500 x 5000.
* The ``polars`` engine (native expressions) in the same rounds: reported (seconds, ratio to
  TA-Lib) and held to a time budget only; it must agree with the kernel engine to 1e-9.
* ``build_features`` on 5,000 symbols x 5,000 days (25 M bars) in a child process: peak RSS under
  6 GB, and 2x the bars costs at most 2.2x the time of the 2,500-symbol build (``slow``).
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantcli.features import compute_features, feature_names


def talib_features(bars: pl.DataFrame) -> dict[str, list[np.ndarray]]:
    """The peer: TA-Lib called per symbol for the same 29 outputs (bars sorted by symbol, ts)."""
    import talib

    h, lo, c, v = (
        np.ascontiguousarray(bars[x].to_numpy()) for x in ("high", "low", "close", "volume")
    )
    runs = bars["symbol"].rle().struct.field("len").to_numpy()
    edges = [0, *np.cumsum(runs).tolist()]
    out: dict[str, list[np.ndarray]] = {name: [] for name in feature_names()}
    for a, b in itertools.pairwise(edges):
        H, L, C, V = h[a:b], lo[a:b], c[a:b], v[a:b]
        upper, middle, lower = talib.BBANDS(C, 20, 2.0, 2.0, 0)
        m, s, hist = talib.MACD(C, 12, 26, 9)
        k, d = talib.STOCH(H, L, C, 14, 3, 0, 3, 0)
        obv = talib.OBV(C, V)
        r1 = talib.ROCP(C, 1)
        cols = {
            **{f"nma_{n}": C / talib.SMA(C, n) - 1.0 for n in (9, 20, 50, 200)},
            "bb_pct": (C - lower) / (upper - lower),
            "bb_width": (upper - lower) / middle,
            **{f"volume_z_{n}": (V - talib.SMA(V, n)) / talib.STDDEV(V, n, 1.0) for n in (20, 50)},
            "rsi_14": talib.RSI(C, 14),
            "rsi_21": talib.RSI(C, 21),
            "roc_10": talib.ROC(C, 10),
            "roc_20": talib.ROC(C, 20),
            "macd": m,
            "macd_signal": s,
            "macd_hist": hist,
            "adx_14": talib.ADX(H, L, C, 14),
            "plus_di_14": talib.PLUS_DI(H, L, C, 14),
            "minus_di_14": talib.MINUS_DI(H, L, C, 14),
            "atr_14": talib.ATR(H, L, C, 14),
            "volatility_20": talib.STDDEV(r1, 20, 1.0),
            "volatility_50": talib.STDDEV(r1, 50, 1.0),
            "stoch_k": k,
            "stoch_d": d,
            "obv": obv,
            "obv_ema": talib.EMA(obv, 20),
            **{f"return_{n}d": talib.ROCP(C, n) for n in (1, 5, 10, 20)},
        }
        for name, values in cols.items():
            out[name].append(values[199:])
    return out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _interleaved(fns: dict[str, object], rounds: int) -> dict[str, tuple[float, float, object]]:
    """Per engine: best wall time, the CPU seconds (all threads) of that round, and the result;
    the engines take turns in every round, so a busy spell on a shared machine hits all."""
    best: dict[str, tuple[float, float, object]] = {
        k: (float("inf"), float("inf"), None) for k in fns
    }
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), _cpu()
            result = fn()  # type: ignore[operator]
            wall = time.perf_counter() - t0
            if wall < best[name][0]:
                best[name] = (wall, _cpu() - c0, result)
    return best


def _run(
    benchmark,
    bars: pl.DataFrame,
    *,
    min_ratio: float,
    budget_s: float,
    polars_budget_s: float,
    rounds: int,
):
    compute_features(bars.head(1000))  # load the compiled kernels
    compute_features(bars.head(1000), engine="polars")
    best = _interleaved(
        {
            "talib": lambda: talib_features(bars),
            "kernel": lambda: compute_features(bars),
            "polars": lambda: compute_features(bars, engine="polars"),
        },
        rounds,
    )
    (t_ta, cpu_ta, ref), (t_q, cpu_q, ours), (t_pl, cpu_pl, native) = (
        best["talib"], best["kernel"], best["polars"]
    )  # fmt: skip
    benchmark.pedantic(compute_features, args=(bars,), rounds=1, iterations=1)
    for name in feature_names():
        expected = np.concatenate(ref[name])
        assert np.array_equal(ours[name].to_numpy(), expected), f"{name} differs from TA-Lib"
        # the polars engine's own agreement is tested in tests/features; here only a sanity check
        assert np.isfinite(native[name].to_numpy()).all(), f"polars engine: {name} not finite"
    ratio = t_ta / t_q
    rows = bars.height
    load = os.getloadavg()[0]
    benchmark.extra_info.update(
        {"talib_s": t_ta, "quantcli_s": t_q, "ratio": ratio, "talib_cpu_s": cpu_ta,
         "quantcli_cpu_s": cpu_q, "polars_engine_s": t_pl, "polars_engine_cpu_s": cpu_pl,
         "polars_engine_ratio": t_ta / t_pl, "load_avg_1m": load}
    )  # fmt: skip
    print(
        f"\nfeatures {bars['symbol'].n_unique()} symbols x {rows // bars['symbol'].n_unique()} "
        f"bars: quantcli {t_q:.3f} s ({rows / t_q / 1e6:.2f} M rows/s), TA-Lib per symbol "
        f"{t_ta:.3f} s ({rows / t_ta / 1e6:.2f} M rows/s), ratio {ratio:.2f} (best of {rounds}); "
        f"CPU seconds quantcli {cpu_q:.2f} (all threads), TA-Lib {cpu_ta:.2f}; "
        f"polars engine {t_pl:.3f} s (CPU {cpu_pl:.2f}, ratio to TA-Lib {t_ta / t_pl:.2f}); "
        f"load average {load:.2f}"
    )
    assert ratio >= min_ratio, f"throughput ratio {ratio:.2f} below {min_ratio}"
    assert t_q <= budget_s, f"{t_q:.2f} s over the {budget_s} s budget"
    assert t_pl <= polars_budget_s, f"polars engine {t_pl:.2f} s over {polars_budget_s} s"


def test_features_vs_talib_50x1000(benchmark, universe_50x1000):
    # small frames: fixed costs (frame assembly) weigh more than at 2.5 M rows
    _run(benchmark, universe_50x1000, min_ratio=0.3, budget_s=2.0, polars_budget_s=2.0, rounds=3)


@pytest.mark.slow
def test_features_vs_talib_500x5000(benchmark, universe_500x5000):
    _run(benchmark, universe_500x5000, min_ratio=1.0, budget_s=3.0, polars_budget_s=6.0, rounds=3)


_BUILD_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from quantcli.features.build import build_features
    symbols = json.loads(sys.argv[1])
    t0 = time.perf_counter()
    r = build_features(symbols=symbols or None)
    elapsed = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"s": elapsed, "peak_gb": peak_kb / 1024**2, "rows": r.rows_written}))
    """
)

_INGEST_CHILD = textwrap.dedent(
    """
    import sys
    import polars as pl
    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    n_chunks, per_chunk, days = map(int, sys.argv[1:4])
    for k in range(n_chunks):
        bars = synthetic_universe(per_chunk, days, seed=1000 + k)
        bars = bars.with_columns(pl.format("C{}_{}", pl.lit(k), pl.col("symbol")).alias("symbol"))
        ingest_frame(bars, source=f"synthetic chunk {k}")
    """
)


def _child(code: str, *args: str, home: Path) -> str:
    env = {**os.environ, "QCLI_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=3600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_build_25m_bars_memory_and_linear_time(tmp_path):
    """5,000 x 5,000 bars: peak RSS < 6 GB; the full build <= 2.2x the half build's time."""
    full_home, half_home = tmp_path / "full", tmp_path / "half"
    full_home.mkdir()
    _child(_INGEST_CHILD, "10", "500", "5000", home=full_home)
    half_home.mkdir()
    # same bars store for both runs: copy the file instead of ingesting twice
    (half_home / "offline.duckdb").write_bytes((full_home / "offline.duckdb").read_bytes())
    half_symbols = [f"C{k}_SYM{i:04d}" for k in range(5) for i in range(500)]
    half = json.loads(_child(_BUILD_CHILD, json.dumps(half_symbols), home=half_home))
    full = json.loads(_child(_BUILD_CHILD, "[]", home=full_home))
    growth = full["s"] / half["s"]
    print(
        f"\nbuild 25 M bars: {full['s']:.1f} s, peak RSS {full['peak_gb']:.2f} GB, "
        f"{full['rows']} rows; 12.5 M bars: {half['s']:.1f} s, peak {half['peak_gb']:.2f} GB; "
        f"time growth for 2x rows {growth:.2f}x"
    )
    assert full["rows"] == 5000 * (5000 - 199)
    assert full["peak_gb"] < 6.0
    assert growth <= 2.2
