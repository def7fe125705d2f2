"""Feature engine throughput against TA-Lib, and the 25 M bar build's memory and scaling.

* ``compute_features`` (29 columns, sort check, the lazy plan of the default ``kernel`` engine:
  one ``map_batches`` expression per indicator group running the Numba kernels on contiguous
  symbol blocks, a lazy warm-up filter) against TA-Lib called per symbol for the same 29
  outputs, in the same run (interleaved rounds), on the seeded synthetic universe; the outputs
  must be bit-identical. Goal: ratio >= 1.0 on 500 x 5000.
* The ``polars`` engine (native expressions) in the same rounds: reported (seconds, ratio to
  TA-Lib) and held to a time budget only; it must agree with the kernel engine to 1e-9.
* ``build_features`` on 5,000 symbols x 5,000 days (25 M bars) in a child process: peak RSS under
  6 GB, and 2x the bars costs at most 2.2x the time of the 2,500-symbol build (``slow``).
* ``build_features`` through the whole build path (bar reads, compute, the one writer, one
  transaction) with the writer overlapping the next wave's compute (``overlap=True``, the
  default) against the serial writer (``overlap=False``, the peer) in interleaved rounds, and the
  compute-only time of the same shards: 500 x 5,000 (``slow``) and a 100 x 2,500 smoke size.
* Per core (``-k per_core``): CPU seconds (user + system, every thread) of ``compute_features``
  against TA-Lib's one thread, for ``technical_v1`` and for 20 features of the kinds added
  beside it, with wall time beside them; medians of 9 rounds in which the two alternate.
  Asserted: the median of the per-round CPU ratios >= 1.0 on 500 x 5,000, with no tolerance.
  Noise, measured on the shared 2-core machine at a load average of 5-9: within a run the
  middle five per-round ratios span 0.03-0.15 and single rounds stray by up to 0.4 either way
  (the median ignores them); three runs gave 1.05-1.07 for ``technical_v1`` (1.10 with
  ``QCLI_FEATURE_THREADS=1``) and 1.07-1.09 for the 20 features. Between runs the median
  follows the load, as both engines' CPU seconds grow with the other processes' memory
  traffic, ours (0.56 GB of output streamed to memory) more than TA-Lib's (per-symbol arrays
  in cache): at a load average of 12-15 the same code less its last change read 0.95-0.97.
  So no tolerance: on a busy machine the assertion can fail without a regression.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import shutil
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
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
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
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    r = build_features(symbols=symbols or None)
    elapsed, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    # this process's own peak: ru_maxrss keeps the spawning process's RSS across exec
    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]
    peak_kb = int(hwm[0].split()[1]) if hwm else r1.ru_maxrss
    io = dict(l.split(': ') for l in open('/proc/self/io').read().splitlines())
    print(json.dumps({"s": elapsed, "user_s": r1.ru_utime - r0.ru_utime,
                      "sys_s": r1.ru_stime - r0.ru_stime,
                      "faults": r1.ru_minflt - r0.ru_minflt + r1.ru_majflt - r0.ru_majflt,
                      "io_bytes": int(io['rchar']) + int(io['wchar']),
                      "peak_gb": peak_kb / 1024**2, "rows": r.rows_written}))
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
    """5,000 x 5,000 bars: peak RSS < 6 GB; the full build's work <= 2.2x the half build's.

    Half and full builds alternate, three times, each on a fresh copy of one ingested store
    (flushed to disk first); each measure compares the smallest of each size. The build's work
    is its user CPU time (every thread) and the bytes it reads and writes: both are asserted.
    Page faults, system and wall time are reported, not asserted: how often the allocators hand
    pages back and fault them in again varies, and the kernel's time per fault and per byte
    written grew faster than the rows (docs/features.md: 2.0x the user time came with 2.85x the
    system time), as does wall time with the write-back throttling."""
    bars_home = tmp_path / "bars"
    bars_home.mkdir()
    _child(_INGEST_CHILD, "10", "500", "5000", home=bars_home)
    half_symbols = [f"C{k}_SYM{i:04d}" for k in range(5) for i in range(500)]
    runs: dict[str, list[dict]] = {"half": [], "full": []}
    for rep in range(3):
        for size, symbols in (("half", half_symbols), ("full", [])):
            home = tmp_path / f"{size}{rep}"
            home.mkdir()
            shutil.copyfile(bars_home / "offline.duckdb", home / "offline.duckdb")
            os.sync()
            runs[size].append(json.loads(_child(_BUILD_CHILD, json.dumps(symbols), home=home)))
            shutil.rmtree(home)
    measures = ("s", "user_s", "sys_s", "faults", "io_bytes", "rows")
    half = {k: min(r[k] for r in runs["half"]) for k in measures}
    full = {k: min(r[k] for r in runs["full"]) for k in measures}
    full["peak_gb"] = max(r["peak_gb"] for r in runs["full"])
    half["peak_gb"] = max(r["peak_gb"] for r in runs["half"])
    growth = {k: full[k] / half[k] for k in ("user_s", "faults", "io_bytes", "sys_s", "s")}
    print(
        f"\nbest of 3, build 25 M bars: {full['s']:.1f} s ({full['user_s']:.1f} user + "
        f"{full['sys_s']:.1f} system CPU s), peak RSS {full['peak_gb']:.2f} GB, {full['rows']} "
        f"rows; 12.5 M bars: {half['s']:.1f} s ({half['user_s']:.1f} + {half['sys_s']:.1f} CPU "
        f"s), peak {half['peak_gb']:.2f} GB; growth for 2x rows: user CPU "
        f"{growth['user_s']:.2f}x, page faults {growth['faults']:.2f}x, bytes read and written "
        f"{growth['io_bytes']:.2f}x; system CPU {growth['sys_s']:.2f}x, wall {growth['s']:.2f}x"
    )
    assert full["rows"] == 5000 * (5000 - 199)
    assert full["peak_gb"] < 6.0
    assert growth["user_s"] <= 2.2
    assert growth["io_bytes"] <= 2.2


def _store_with_bars(path: Path, bars: pl.DataFrame):
    from quantcli.store.offline import OfflineStore

    store = OfflineStore(path)
    store.ensure_schema("schema_core")
    with store.transaction() as con:
        con.register("new_bars", bars.to_arrow())
        con.execute(
            "INSERT INTO bars SELECT symbol, ts, open, high, low, close, volume FROM new_bars"
        )
        con.unregister("new_bars")
    return store


def _build_overlap_vs_serial(
    benchmark,
    bars: pl.DataFrame,
    tmp: Path,
    *,
    shard_rows: int,
    rounds: int,
    max_ratio: float,
    budget_s: float,
) -> dict[str, float]:
    """Full builds with and without the overlapped writer, interleaved, plus compute only."""
    from quantcli.features.build import ShardTask, build_features, compute_shard

    base = tmp / "bars.duckdb"
    _store_with_bars(base, bars).close()
    symbols = sorted(bars["symbol"].unique().to_list())
    per_shard = max(1, shard_rows // (bars.height // len(symbols)))
    tasks = [
        ShardTask("technical_v1", bars.filter(pl.col("symbol").is_in(symbols[i : i + per_shard])),
                  "full", None, {})
        for i in range(0, len(symbols), per_shard)
    ]  # fmt: skip
    compute_shard(tasks[0])  # load the compiled kernels

    def compute_only():
        t0 = time.perf_counter()
        for task in tasks:
            compute_shard(task)
        return time.perf_counter() - t0, None

    def build(overlap: bool):
        from quantcli.store.offline import OfflineStore

        path = tmp / f"build-{overlap}.duckdb"
        path.write_bytes(base.read_bytes())  # the same bars, an empty feature table
        with OfflineStore(path) as store:
            t0 = time.perf_counter()
            result = build_features(store, full=True, shard_rows=shard_rows, overlap=overlap)
            wall = time.perf_counter() - t0
        path.unlink()
        return wall, result

    runs: dict[str, list] = {"serial": [], "overlap": [], "compute": []}
    loads = []
    for _ in range(rounds):
        for name in runs:
            runs[name].append(compute_only() if name == "compute" else build(name == "overlap"))
        loads.append(os.getloadavg()[0])
    benchmark.pedantic(build, args=(True,), rounds=1, iterations=1)
    walls = {k: sorted(t for t, _ in v) for k, v in runs.items()}
    p50 = {k: float(np.median(v)) for k, v in walls.items()}
    serial_res = [r for _, r in runs["serial"]]
    overlap_res = [r for _, r in runs["overlap"]]
    assert {r.input_sha256 for r in serial_res + overlap_res} == {serial_res[0].input_sha256}
    assert {r.rows_written for r in serial_res + overlap_res} == {serial_res[0].rows_written}
    # the write the driver still waited for, and the whole write, per build (median)
    wait = {k: float(np.median([r.timings_s["write_wait"] for _, r in runs[k]]))
            for k in ("serial", "overlap")}  # fmt: skip
    write = {k: float(np.median([r.timings_s["write"] for _, r in runs[k]]))
             for k in ("serial", "overlap")}  # fmt: skip
    ratio = p50["overlap"] / p50["serial"]
    figures = {
        "bars": bars.height, "shards": len(tasks), "rounds": rounds,
        "serial_s": walls["serial"], "overlap_s": walls["overlap"],
        "compute_only_s": walls["compute"],
        "ratio_overlap_over_serial_p50": ratio, "write_s": write, "write_wait_s": wait,
        "load_avg_1m": loads,
    }  # fmt: skip
    benchmark.extra_info.update(figures)
    fmt = lambda v: f"{v[0]:.2f}/{float(np.median(v)):.2f}/{v[-1]:.2f}"  # noqa: E731
    print(
        f"\nbuild {len(symbols)} x {bars.height // len(symbols)} bars ({len(tasks)} shards), "
        f"{rounds} interleaved rounds, min/p50/max s: serial writer {fmt(walls['serial'])}, "
        f"overlapped writer {fmt(walls['overlap'])}, compute only {fmt(walls['compute'])}; "
        f"p50 ratio overlap/serial {ratio:.3f}; write s (median) serial {write['serial']:.2f} "
        f"overlap {write['overlap']:.2f}, of which the driver waited {wait['serial']:.2f} / "
        f"{wait['overlap']:.2f}; load average {'/'.join(f'{x:.2f}' for x in loads)}"
    )
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
        assert ratio <= max_ratio, f"overlapped build {ratio:.2f}x the serial writer's time"
        assert p50["overlap"] <= budget_s, f"{p50['overlap']:.2f} s over the {budget_s} s budget"
    return figures


def test_build_overlap_vs_serial_writer_100x2500(benchmark, tmp_path):
    from quantcli.data.synthetic import synthetic_universe

    bars = synthetic_universe(100, 2500, seed=42)  # 250 k bars, 10 shards of 25 k
    _build_overlap_vs_serial(
        benchmark, bars, tmp_path, shard_rows=25_000, rounds=3, max_ratio=1.25, budget_s=5.0
    )


@pytest.mark.slow
def test_build_overlap_vs_serial_writer_500x5000(benchmark, universe_500x5000, tmp_path):
    _build_overlap_vs_serial(
        benchmark,
        universe_500x5000,
        tmp_path,
        shard_rows=250_000,
        rounds=5,
        max_ratio=1.10,
        budget_s=20.0,
    )


# --------------------------------------------------------------------------------------------
# Per core: CPU seconds against TA-Lib's (one thread), technical_v1 and 20 features of the kinds
# added beside it. The kernel engine runs symbol ranges on threads, so wall time alone would
# credit it with the second core; the goal is >= 1.0 per core.
# --------------------------------------------------------------------------------------------
NEW_KINDS_20 = {
    "ema_20": ("ema", {"window": 20}),
    "wma_20": ("wma", {"window": 20}),
    "dema_20": ("dema", {"window": 20}),
    "tema_20": ("tema", {"window": 20}),
    "kama_10": ("kama", {"window": 10}),
    "trix_15": ("trix", {"window": 15}),
    "sar": ("sar", {}),
    "slope_14": ("linearreg_slope", {"window": 14}),
    "cci_14": ("cci", {"window": 14}),
    "mfi_14": ("mfi", {"window": 14}),
    "willr_14": ("willr", {"window": 14}),
    "aroon_up_14": ("aroon_up", {"window": 14}),
    "aroon_down_14": ("aroon_down", {"window": 14}),
    "cmo_14": ("cmo", {"window": 14}),
    "ppo": ("ppo", {}),
    "ultosc": ("ultosc", {}),
    "natr_14": ("natr", {"window": 14}),
    "stochrsi_k": ("stochrsi_k", {}),
    "ad": ("ad", {}),
    "adosc": ("adosc", {}),
}
#: Kinds compared with rtol 1e-9 rather than to the bit (docs/features.md says why).
NOT_BITWISE = {"wma", "linearreg_slope", "mfi"}


def _new_kinds_set(directory: Path) -> str:
    lines = ['[feature_set]\nname = "bench_new"\nversion = 1\ntable = "bench_new_features_v1"\n']
    for name, (kind, params) in NEW_KINDS_20.items():
        body = ", ".join(f"{k} = {v!r}" for k, v in params.items())
        lines.append(f'[[features]]\nname = "{name}"\nkind = "{kind}"\nparams = {{ {body} }}\n')
    (directory / "bench_new_v1.toml").write_text("\n".join(lines))
    return "bench_new_v1"


def talib_new_kinds(bars: pl.DataFrame) -> dict[str, list[np.ndarray]]:
    """The 20 columns, TA-Lib called per symbol (AROON and its two outputs once)."""
    import talib

    out: dict[str, list[np.ndarray]] = {name: [] for name in NEW_KINDS_20}
    for (_sym,), g in bars.group_by("symbol", maintain_order=True):
        h, lo, c, v = (g[x].to_numpy() for x in ("high", "low", "close", "volume"))
        down, up = talib.AROON(h, lo, 14)
        cols = {
            "ema_20": talib.EMA(c, 20), "wma_20": talib.WMA(c, 20), "dema_20": talib.DEMA(c, 20),
            "tema_20": talib.TEMA(c, 20), "kama_10": talib.KAMA(c, 10),
            "trix_15": talib.TRIX(c, 15), "sar": talib.SAR(h, lo),
            "slope_14": talib.LINEARREG_SLOPE(c, 14), "cci_14": talib.CCI(h, lo, c, 14),
            "mfi_14": talib.MFI(h, lo, c, v, 14), "willr_14": talib.WILLR(h, lo, c, 14),
            "aroon_up_14": up, "aroon_down_14": down, "cmo_14": talib.CMO(c, 14),
            "ppo": talib.PPO(c), "ultosc": talib.ULTOSC(h, lo, c),
            "natr_14": talib.NATR(h, lo, c, 14),
            "stochrsi_k": talib.STOCHRSI(c)[0], "ad": talib.AD(h, lo, c, v),
            "adosc": talib.ADOSC(h, lo, c, v),
        }  # fmt: skip
        for name, col in cols.items():
            out[name].append(col)
    return out


def _rounds(fns: dict[str, object], rounds: int) -> tuple[dict[str, list], dict[str, object]]:
    """Per engine and round: (wall s, CPU s of all threads); and each engine's last result.
    The engines alternate within every round, so a busy spell of a shared machine hits both."""
    times: dict[str, list] = {k: [] for k in fns}
    results: dict[str, object] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            results.pop(name, None)  # free the previous round's output before the next one
            t0, c0 = time.perf_counter(), _cpu()
            results[name] = fn()  # type: ignore[operator]
            times[name].append((time.perf_counter() - t0, _cpu() - c0))
    return times, results


def _per_core(benchmark, label: str, bars, peer, ours, check, *, min_cpu_ratio, budget_s, rounds):
    """CPU seconds (all threads, user + system) against TA-Lib's single thread, and wall time,
    as medians over ``rounds`` interleaved rounds; the assertion is on the median per-core
    ratio (the load average is printed beside it: on a shared machine both engines' CPU
    times grow with the other processes' memory traffic, and the median of the per-round
    ratios moves less than either time)."""
    ours()  # load the compiled kernels
    times, results = _rounds({"talib": peer, "quantcli": ours}, rounds)
    benchmark.pedantic(ours, rounds=1, iterations=1)
    check(results["talib"], results["quantcli"])
    (w_ta, c_ta), (w_q, c_q) = (np.array(times[k]).T for k in ("talib", "quantcli"))
    cpu_ratio = float(np.median(c_ta / c_q))
    wall_ratio = float(np.median(w_ta / w_q))
    load = os.getloadavg()
    benchmark.extra_info.update(
        {"talib_s": float(np.median(w_ta)), "quantcli_s": float(np.median(w_q)),
         "talib_cpu_s": float(np.median(c_ta)), "quantcli_cpu_s": float(np.median(c_q)),
         "cpu_ratio": cpu_ratio, "cpu_ratios": (c_ta / c_q).tolist(), "wall_ratio": wall_ratio,
         "load_avg": load}
    )  # fmt: skip
    spread = "/".join(f"{r:.2f}" for r in sorted(c_ta / c_q))
    print(
        f"\n{label} on {bars['symbol'].n_unique()} x {bars.height // bars['symbol'].n_unique()} "
        f"bars, medians of {rounds} interleaved rounds: CPU quantcli {np.median(c_q):.3f} s "
        f"(all threads), TA-Lib {np.median(c_ta):.3f} s, per-core ratio {cpu_ratio:.2f} "
        f"(rounds {spread}); wall quantcli {np.median(w_q):.3f} s, TA-Lib "
        f"{np.median(w_ta):.3f} s, ratio {wall_ratio:.2f}; load average "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"
    )
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
        assert cpu_ratio >= min_cpu_ratio, f"per-core ratio {cpu_ratio:.2f} below {min_cpu_ratio}"
        assert np.median(w_q) <= budget_s, f"{np.median(w_q):.2f} s over the {budget_s} s budget"


def _check_technical(ref, got) -> None:
    for name in feature_names():
        assert np.array_equal(got[name].to_numpy(), np.concatenate(ref[name])), name


def _check_new_kinds(warmup: int):
    def check(ref, got) -> None:
        symbols = got["symbol"].to_numpy()
        keep = np.concatenate([np.arange(len(col)) >= warmup for col in ref["ema_20"]])
        assert keep.sum() == symbols.size
        for name, (kind, _) in NEW_KINDS_20.items():
            want, have = np.concatenate(ref[name])[keep], got[name].to_numpy()
            if kind in NOT_BITWISE:
                atol = 1e-10 * float(np.abs(want).max())
                np.testing.assert_allclose(have, want, rtol=1e-9, atol=atol, err_msg=name)
            else:
                assert np.array_equal(have, want), name

    return check


def _run_new_kinds(benchmark, bars, tmp_path, monkeypatch, **kw) -> None:
    from quantcli.features import load_feature_set

    monkeypatch.setenv("QCLI_FEATURE_DEFS", str(tmp_path))
    name = _new_kinds_set(tmp_path)
    warmup = load_feature_set(name).warmup
    _per_core(benchmark, "20 features of the new kinds", bars, lambda: talib_new_kinds(bars),
              lambda: compute_features(bars, name), _check_new_kinds(warmup), **kw)  # fmt: skip


def test_new_kinds_20_per_core_vs_talib_50x1000(benchmark, universe_50x1000, tmp_path,
                                                 monkeypatch):  # fmt: skip
    # small frames: the fixed costs of a plan weigh more than at 2.5 M rows
    _run_new_kinds(benchmark, universe_50x1000, tmp_path, monkeypatch, min_cpu_ratio=0.3,
                   budget_s=2.0, rounds=5)  # fmt: skip


@pytest.mark.slow
def test_new_kinds_20_per_core_vs_talib_500x5000(benchmark, universe_500x5000, tmp_path,
                                                  monkeypatch):  # fmt: skip
    _run_new_kinds(benchmark, universe_500x5000, tmp_path, monkeypatch, min_cpu_ratio=1.0,
                   budget_s=4.0, rounds=9)  # fmt: skip


@pytest.mark.slow
def test_technical_v1_per_core_vs_talib_500x5000(benchmark, universe_500x5000):
    bars = universe_500x5000
    _per_core(benchmark, "technical_v1", bars, lambda: talib_features(bars),
              lambda: compute_features(bars), _check_technical, min_cpu_ratio=1.0,
              budget_s=3.0, rounds=9)  # fmt: skip
