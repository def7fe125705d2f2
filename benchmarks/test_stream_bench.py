"""Streaming updates against the full rebuild in the same run.

* One new bar for each stored symbol: ``build_features`` continuing every symbol from its stored
  kernel state, against ``build_features(full=True)`` over the same bars (the peer). Budget: at
  most 5 % of the full rebuild's wall time (goal under 0.3 s) on 500 x 5,000 bars (``slow``);
  a 100 x 2,500 smoke size at most 35 %; bit-identical tables.
* ``FeatureStream.update`` for one bar of one symbol, in process: p99 under 1 ms over 2,000
  updates, against recomputing the symbol's whole history for that bar (the peer).
* 25 M bars stored (5,000 symbols x 5,000 bars), one new bar for each symbol: under 2 s, against
  the full rebuild of the same store (``slow``; builds in child processes, peak RSS reported).
* The state per symbol is reported in bytes, raw and as stored (Snappy).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest


def _best_stream_step(db: Path, before: Path, rounds: int = 3):
    """The fastest of ``rounds`` streaming builds, each from a flushed copy of ``before``:
    ``(seconds, the last build's result, every round's seconds)``."""
    from quantcli.features.build import build_features

    times: list[float] = []
    for _ in range(rounds):
        shutil.copyfile(before, db)
        os.sync()
        t0 = time.perf_counter()
        step = build_features()
        times.append(time.perf_counter() - t0)
    return min(times), step, times


def _one_new_bar(
    benchmark, bars: pl.DataFrame, max_ratio: float, budget_s: float, rounds: int = 3
) -> None:
    """The streaming step is timed ``rounds`` times from copies of one store (flushed to disk
    first, so no round pays for writing back the copy), best of them: one run varies by about
    20 % here, which a ratio of single runs doubles."""
    from quantcli.data.ingest import ingest_frame
    from quantcli.features import load_feature_set
    from quantcli.features.build import build_features
    from quantcli.features.engine import KernelPlan
    from quantcli.store.offline import OfflineStore
    from quantcli.workspace import Workspace

    last = bars["ts"].max()
    ingest_frame(bars.filter(pl.col("ts") < last))
    build_features()
    t0 = time.perf_counter()
    build_features(full=True)
    full_s = time.perf_counter() - t0
    ingest_frame(bars)
    db = Workspace.from_env().offline_path
    before = db.with_name("before_stream.duckdb")
    shutil.copyfile(db, before)
    stream_s, step, times = _best_stream_step(db, before, rounds)
    benchmark.extra_info["timed_by"] = "the test: best of its rounds from fresh copies"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    n_sym = bars["symbol"].n_unique()
    assert step.paths == {"stream": sorted(bars["symbol"].unique())}
    assert step.rows_written == n_sym
    with OfflineStore(read_only=True) as store:
        streamed = store.con.sql("SELECT * FROM technical_features_v1 ORDER BY symbol, ts").pl()
        stored_bytes = int(
            store.con.sql("SELECT avg(octet_length(state)) FROM feature_stream_state").fetchall()[
                0
            ][0]
        )
    t0 = time.perf_counter()
    build_features(full=True)
    full_s = min(full_s, time.perf_counter() - t0)
    with OfflineStore(read_only=True) as store:
        rebuilt = store.con.sql("SELECT * FROM technical_features_v1 ORDER BY symbol, ts").pl()
    assert streamed.equals(rebuilt)
    state_bytes = 8 * KernelPlan.of(load_feature_set("technical_v1")).state_size
    ratio = stream_s / full_s
    benchmark.extra_info.update(
        {"bars": bars.height, "symbols": n_sym, "stream_s": round(stream_s, 4),
         "stream_runs_s": [round(t, 4) for t in times], "full_rebuild_s": round(full_s, 4),
         "ratio": round(ratio, 4), "state_bytes_per_symbol": state_bytes,
         "stored_state_bytes_per_symbol": stored_bytes,
         "timings": step.timings_s}
    )  # fmt: skip
    print(f"\n{n_sym} x {bars.height // n_sym}: one new bar/symbol {stream_s:.3f} s (best of "
          f"{rounds}), full rebuild {full_s:.3f} s, ratio {ratio:.3f}; state {state_bytes} "
          f"B/symbol, {stored_bytes} B stored; {step.timings_s}")  # fmt: skip
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
        assert ratio <= max_ratio, f"streaming build {ratio:.3f} of the full rebuild"
        assert stream_s <= budget_s, f"streaming build {stream_s:.2f} s over {budget_s} s"


def test_one_new_bar_100x2500(benchmark, qcli_home):
    from quantcli.data.synthetic import synthetic_universe

    # a smoke size: the fixed costs (open, the bar scan, commit) weigh more than at 2.5 M bars
    _one_new_bar(benchmark, synthetic_universe(100, 2500, seed=7), max_ratio=0.35, budget_s=1.0)


@pytest.mark.slow
def test_one_new_bar_500x5000(benchmark, qcli_home, universe_500x5000):
    _one_new_bar(benchmark, universe_500x5000, max_ratio=0.05, budget_s=1.0)


@pytest.mark.slow
def test_one_new_bar_after_a_first_build_5000x260(benchmark, qcli_home):
    """The everyday flow on many short histories: a first (incremental) build, then one new bar
    per symbol (best of 3 from flushed copies). Peer: the full rebuild of the same store (1.3 M
    bars: short histories, so the per-symbol costs of a step weigh more than at 25 M). Budget:
    at most 0.8 of it, and under 2 s. The state write once took 1.9 s of a 2.8 s step here
    (DuckDB updated the 5,000 stored states out of their stored order): 1.95x the rebuild."""
    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.build import build_features
    from quantcli.workspace import Workspace

    bars = synthetic_universe(5000, 260, seed=1)
    last = bars["ts"].max()
    db = Workspace.from_env().offline_path
    ingest_frame(bars.filter(pl.col("ts") < last))
    build_features()  # the first build: kernel states stored shard by shard
    ingest_frame(bars.filter(pl.col("ts") == last))
    before = Path(shutil.copyfile(db, db.with_name("before_stream.duckdb")))
    stream_s, step, _ = _best_stream_step(db, before)
    timings = step.timings_s
    os.sync()
    t0 = time.perf_counter()
    build_features(full=True)
    full_s = time.perf_counter() - t0
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # timed above
    ratio = stream_s / full_s
    benchmark.extra_info.update({"stream_s": stream_s, "full_rebuild_s": full_s,
                                 "ratio": ratio, "timings": timings})  # fmt: skip
    print(f"\n5,000 x 260 after a first build, one new bar each: {stream_s:.2f} s ({timings}); "
          f"full rebuild {full_s:.2f} s; ratio {ratio:.2f}")  # fmt: skip
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
        assert ratio <= 0.8, f"streaming {ratio:.2f} of the full rebuild"
        assert stream_s < 2.0, f"{stream_s:.2f} s"


def test_feature_stream_update_one_bar_p99(benchmark, universe_50x1000):
    from quantcli.features import compute_features
    from quantcli.features.stream import FeatureStream

    one = universe_50x1000.filter(pl.col("symbol") == "SYM0000").sort("ts")
    history, live = one.head(800), one.tail(200)
    stream = FeatureStream("technical_v1")
    stream.update(history)
    rows = [live.slice(i, 1) for i in range(live.height)]
    benchmark.pedantic(FeatureStream("technical_v1").update, args=(history,), rounds=1)
    times = []
    for _ in range(10):  # 10 passes over the 200 live bars from the same state
        fresh = FeatureStream("technical_v1")
        fresh.update(history)
        for bar in rows:
            t0 = time.perf_counter_ns()
            fresh.update(bar)
            times.append(time.perf_counter_ns() - t0)
    p50, p99 = np.percentile(np.array(times) / 1e6, [50, 99])
    t0 = time.perf_counter()
    for k in range(20):  # the peer: the symbol's whole history recomputed for one new bar
        compute_features(one.head(800 + k + 1))
    peer_ms = (time.perf_counter() - t0) / 20 * 1e3
    benchmark.extra_info.update({"p50_ms": round(p50, 4), "p99_ms": round(p99, 4),
                                 "recompute_ms": round(peer_ms, 3)})  # fmt: skip
    print(f"\nFeatureStream.update one bar: p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
          f"recomputing 800 bars {peer_ms:.2f} ms")  # fmt: skip
    if not benchmark.disabled:  # budgets: `pytest benchmarks`; the smoke run checks it runs
        assert p99 < 1.0, f"p99 {p99:.3f} ms"
        assert p99 < peer_ms


_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import polars as pl
    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.build import build_features
    what = sys.argv[1]
    if what.startswith("ingest"):
        for k in range(10):
            bars = synthetic_universe(500, 5000, seed=1000 + k)
            name = pl.format("C{}_{}", pl.lit(k), pl.col("symbol")).alias("symbol")
            bars = bars.with_columns(name)
            last = bars["ts"].max()
            keep = pl.col("ts") < last if what == "ingest-history" else pl.col("ts") == last
            ingest_frame(bars.filter(keep), source=f"synthetic chunk {k}")
        print("{}")
    else:
        t0 = time.perf_counter()
        r = build_features(full=what == "full")
        elapsed = time.perf_counter() - t0
        # this process's own peak: ru_maxrss keeps the spawning process's RSS across exec
        hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]
        peak_kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"s": elapsed, "peak_gb": peak_kb / 1024**2, "rows": r.rows_written,
                          "paths": {k: len(v) for k, v in r.paths.items()},
                          "timings": r.timings_s}))
    """
)


def _child(what: str, home: Path) -> dict:
    env = {**os.environ, "QCLI_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, what], env=env, capture_output=True, text=True,
        timeout=3600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_new_bar_5000_symbols_on_25m_bars(benchmark, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    _child("ingest-history", home)
    full = _child("full", home)
    _child("ingest-last", home)
    # best of 3 streaming steps, each from a copy of the store flushed to disk first (one run
    # varies by 10-20 % here)
    before = home / "before_stream.duckdb"
    shutil.copyfile(home / "offline.duckdb", before)
    steps = []
    for _ in range(3):
        shutil.copyfile(before, home / "offline.duckdb")
        os.sync()
        steps.append(_child("incremental", home))
    step = min(steps, key=lambda r: r["s"])
    benchmark.extra_info["stream_runs_s"] = [round(r["s"], 3) for r in steps]
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # timed above, in the children
    ratio = step["s"] / full["s"]
    benchmark.extra_info.update({"full_s": full["s"], "full_peak_gb": full["peak_gb"],
                                 "stream_s": step["s"], "stream_peak_gb": step["peak_gb"],
                                 "ratio": ratio, "timings": step["timings"]})  # fmt: skip
    print(f"\n25 M bars, 5,000 symbols: one new bar each {step['s']:.2f} s (best of 3, peak "
          f"{step['peak_gb']:.2f} GB, {step['timings']}); full rebuild {full['s']:.1f} s (peak "
          f"{full['peak_gb']:.2f} GB); ratio {ratio:.3f}")  # fmt: skip
    assert step["paths"] == {"stream": 5000}
    assert step["rows"] == 5000
    assert step["s"] < 2.0, f"{step['s']:.2f} s"
    assert full["peak_gb"] < 6.0
