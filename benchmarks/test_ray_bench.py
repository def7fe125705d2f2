"""Ray executor vs the local executor for a feature build, and a measured scale-out model.

Peer: the local executor in the same run (ratio ``ray / local`` of the build's wall time).
Both builds write the same bytes (``tests/scale``); this file measures what Ray costs and what it
could gain. On this 2-core machine the honest expectation is *no* gain: the cluster and the
driver share the same two cores, and the single writer is serial.

Measured per run and printed (``-s``), also stored in the benchmark's ``extra_info``:

* ``local_s`` / ``ray_s``: wall time of ``build_features(..., full=True)`` on each executor, Ray
  workers already warm (imports and Numba kernels loaded; the cold start is reported apart);
* ``compute_per_shard_s``: ``compute_shard`` of one shard, in this process;
* ``serialize_s`` and ``shard_mb``: pickling a shard task and its result there and back, and
  their size; ``ray_overhead_per_task_s``: one shard through Ray minus its local compute;
* ``serial_s``: the part no worker can take (bar reads, the writer, bookkeeping): local total
  minus shards x compute per shard (the writer overlaps the next wave's compute, so part of
  the compute is hidden behind the write and this split, and the model below, are approximate);
* the extrapolation ``T(N) = serial + ceil(waves) * ceil(wave / min(N, wave)) * (compute +
  overhead)`` for N workers, with ``wave = wave_size(N, shard_rows, 29, waves_alive=2)`` the
  number of shards the build hands to the executor at once (two per worker, memory-capped for
  the two waves alive while the writer overlaps; see ``docs/features.md``).
"""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path

import polars as pl
import pytest

# Budget: on 2 cores Ray may not be slower than the local loop by more than this factor. The
# build is writer-bound (compute is ~10 % of the local time), so Ray only adds the transfer of
# each shard (16 MB of bars out, 60 MB of features back); measured 0.72, 2.12 and 1.65 in three
# runs with load averages of 12-13, 12-13 and 3.9 on this 2-core machine (docs/scaling.md).
# A regression such as pickling every shard twice would exceed it.
RAY_OVER_LOCAL_BUDGET = 3.0
# Budget for shipping one default shard to a worker and its result back (object store, pickling).
RAY_TASK_OVERHEAD_BUDGET_S = 10.0
WORKERS = (1, 2, 4, 8, 16, 32, 64)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    if not ray.is_initialized():
        # Ray waits a fixed 30 s for its raylet: one retry on a loaded machine.
        for attempt in (1, 2):
            try:
                ray.init(
                    num_cpus=2, include_dashboard=False, log_to_driver=False,
                    configure_logging=False,
                )  # fmt: skip
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
    yield ray
    ray.shutdown()


def _store_with_bars(path: Path, bars: pl.DataFrame):
    from quantcli.store.offline import OfflineStore

    store = OfflineStore(path)
    store.ensure_schema("schema_core")
    with store.transaction() as con:
        con.register("new_bars", bars.select("symbol", "ts", "open", "high", "low", "close",
                                             "volume").to_arrow())  # fmt: skip
        con.execute("INSERT INTO bars SELECT * FROM new_bars")
        con.unregister("new_bars")
    return store


def _one_shard_task(bars: pl.DataFrame, shard_rows: int):
    from quantcli.features.build import ShardTask

    per_symbol = bars.group_by("symbol").len()["len"].max()
    n_symbols = max(1, shard_rows // int(per_symbol))
    symbols = sorted(bars["symbol"].unique().to_list())[:n_symbols]
    shard = bars.filter(pl.col("symbol").is_in(symbols))
    return ShardTask("technical_v1", shard, "full", None, {})


def _measure(bars: pl.DataFrame, tmp: Path, shard_rows: int) -> dict[str, float]:
    from quantcli.features.build import build_features, compute_shard, wave_size
    from quantcli.scale import RayExecutor

    ray_exec = RayExecutor()
    task = _one_shard_task(bars, shard_rows)

    # Cold start on the workers: imports and Numba kernels (cached on disk after the first run).
    t = time.perf_counter()
    ray_exec.chunksize = 1
    ray_exec.map(compute_shard, [task, task])
    warmup_s = time.perf_counter() - t

    compute_shard(task)  # warm this process too
    t = time.perf_counter()
    result = compute_shard(task)
    compute_s = time.perf_counter() - t

    t = time.perf_counter()
    blob_task = pickle.dumps(task, protocol=5)
    blob_result = pickle.dumps(result, protocol=5)
    pickle.loads(blob_task)
    pickle.loads(blob_result)
    serialize_s = time.perf_counter() - t

    t = time.perf_counter()
    ray_exec.map(compute_shard, [task])
    overhead_s = max(0.0, time.perf_counter() - t - compute_s)

    with _store_with_bars(tmp / "local.duckdb", bars) as store:
        local = build_features(store, executor="local", full=True, shard_rows=shard_rows)
    with _store_with_bars(tmp / "ray.duckdb", bars) as store:
        on_ray = build_features(store, executor=ray_exec, full=True, shard_rows=shard_rows)
    assert on_ray.rows_written == local.rows_written

    n_shards = math.ceil(bars.height / task.bars.height)
    local_s = local.timings_s["total"]
    serial_s = max(0.0, local_s - n_shards * compute_s)
    wave = {n: wave_size(n, shard_rows, 29, waves_alive=2) for n in WORKERS}  # as the build
    model = {
        n: serial_s
        + math.ceil(n_shards / wave[n])
        * math.ceil(wave[n] / min(n, wave[n]))
        * (compute_s + overhead_s)
        for n in WORKERS
    }
    uncapped = {
        n: serial_s + math.ceil(n_shards / n) * (compute_s + overhead_s) for n in WORKERS
    }  # fmt: skip
    return {
        "bars": bars.height,
        "shards": n_shards,
        "shards_per_wave": wave,
        "local_s": round(local_s, 3),
        "local_read_compute_s": local.timings_s["compute"],
        "local_write_s": local.timings_s["write"],
        "ray_s": round(on_ray.timings_s["total"], 3),
        "ray_read_compute_s": on_ray.timings_s["compute"],
        "ray_write_s": on_ray.timings_s["write"],
        "ratio_ray_over_local": round(on_ray.timings_s["total"] / local_s, 3),
        "ray_worker_warmup_s": round(warmup_s, 3),
        "compute_per_shard_s": round(compute_s, 4),
        "shard_task_mb": round(len(blob_task) / 1e6, 2),
        "shard_result_mb": round(len(blob_result) / 1e6, 2),
        "serialize_roundtrip_s": round(serialize_s, 4),
        "ray_overhead_per_task_s": round(overhead_s, 4),
        "serial_s": round(serial_s, 3),
        "model_s": {n: round(v, 2) for n, v in model.items()},
        "model_uncapped_s": {n: round(v, 2) for n, v in uncapped.items()},
    }


def _report(benchmark, figures: dict) -> None:
    import os

    figures = {**figures, "load_average_1min": round(os.getloadavg()[0], 1)}
    benchmark.extra_info.update(figures)
    print("\nray scale-out figures:")
    for k, v in figures.items():
        print(f"  {k}: {v}")


@pytest.mark.slow
def test_ray_feature_build_500x5000(benchmark, ray_session, universe_500x5000, tmp_path):
    from quantcli.features.build import DEFAULT_SHARD_ROWS

    figures = benchmark.pedantic(
        _measure, args=(universe_500x5000, tmp_path, DEFAULT_SHARD_ROWS), rounds=1, iterations=1
    )
    _report(benchmark, figures)
    assert figures["ratio_ray_over_local"] <= RAY_OVER_LOCAL_BUDGET, figures
    # A 250 k-bar shard (16 MB of bars out, 60 MB of features back) must cross in seconds.
    assert figures["ray_overhead_per_task_s"] < RAY_TASK_OVERHEAD_BUDGET_S, figures


def test_ray_feature_build_smoke(benchmark, ray_session, universe_50x1000, tmp_path):
    """50 x 1000 in shards of 5 symbols: the same measurement, small enough for the CI smoke run."""
    figures = benchmark.pedantic(
        _measure, args=(universe_50x1000, tmp_path, 5_000), rounds=1, iterations=1
    )
    _report(benchmark, figures)
    assert figures["shards"] == 10
    assert set(figures["model_s"]) == set(WORKERS)


def _cpcv_frame(n_symbols: int, n_days: int) -> tuple[pl.DataFrame, list[str]]:
    """Momentum features of a synthetic universe with a planted signal, and the 5-day label."""
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.labels import compute_labels

    bars = synthetic_universe(n_symbols, n_days, seed=9, ar1=0.2)
    names = [f"ret_{n}" for n in (1, 2, 5, 10, 20, 60)]
    feats = bars.sort("symbol", "ts").with_columns(
        *[
            (
                pl.col("close") / pl.col("close").shift(int(c.split("_")[1])).over("symbol") - 1
            ).alias(c)
            for c in names
        ]
    )
    label = compute_labels(bars, 5).collect()
    fwd1 = compute_labels(bars, 1).collect().select("symbol", "ts", fwd_return_1d="label")
    frame = (
        feats.select("symbol", "ts", *names)
        .join(label, on=["symbol", "ts"])
        .join(fwd1, on=["symbol", "ts"])
        .drop_nulls()
        .sort("ts", "symbol")
    )
    return frame, names


def _cpcv_speedup(frame: pl.DataFrame, names: list[str], n_estimators: int) -> dict:
    from quantcli.backtest import CombinatorialPurgedCV
    from quantcli.backtest.engine import run_cpcv_backtest
    from quantcli.models.estimators import LightGBMFactory
    from quantcli.scale import LocalExecutor, RayExecutor, fit_threads

    kwargs = {
        "model_factory": LightGBMFactory({"n_estimators": n_estimators}, seed=3, n_jobs=1),
        "cv": CombinatorialPurgedCV(n_groups=6, n_test_groups=2, embargo_pct=0.01),
    }
    ray_exec = RayExecutor()
    ray_exec.chunksize = 1
    sequential = LocalExecutor()  # the reference loop, one fit after another
    warm, _ = _cpcv_frame(10, 300)  # imports and first fits, on the workers and here
    run_cpcv_backtest(warm, names, executor=ray_exec, **kwargs)
    run_cpcv_backtest(warm, names, executor="local", **kwargs)
    timed = {}
    results = {}
    # the default `--executor local` (a thread per core), the loop, and Ray
    for label, executor in (("local", "local"), ("sequential", sequential), ("ray", ray_exec)):
        t = time.perf_counter()
        results[label] = run_cpcv_backtest(frame, names, executor=executor, **kwargs)
        timed[label] = time.perf_counter() - t
    assert results["ray"].to_dict() == results["local"].to_dict()
    assert results["sequential"].to_dict() == results["local"].to_dict()
    fits = len(results["local"].fold_metrics)
    return {
        "rows": frame.height,
        "fits": fits,
        "fit_threads": fit_threads(),
        "cpcv_sequential_s": round(timed["sequential"], 3),
        "cpcv_local_s": round(timed["local"], 3),
        "cpcv_ray_s": round(timed["ray"], 3),
        "threads_speedup": round(timed["sequential"] / timed["local"], 3),
        "cpcv_speedup_2cpu": round(timed["sequential"] / timed["ray"], 3),
        "fit_s": round(timed["sequential"] / fits, 4),
    }


@pytest.mark.slow
def test_ray_cpcv_speedup(benchmark, ray_session):
    """The case Ray is for: each task is a LightGBM fit (CPU-bound, small payload)."""
    frame, names = _cpcv_frame(100, 1500)
    figures = benchmark.pedantic(_cpcv_speedup, args=(frame, names, 200), rounds=1, iterations=1)
    _report(benchmark, figures)
    # Two workers on two cores against the one-fit-at-a-time loop: a real gain is expected
    # unless the machine is saturated. The default local executor already runs a thread per
    # core, so on one machine Ray only matches it; Ray pays off with more machines.
    assert figures["cpcv_speedup_2cpu"] >= 1.0, figures
    assert figures["threads_speedup"] >= 1.2, figures


def test_ray_cpcv_smoke(benchmark, ray_session):
    frame, names = _cpcv_frame(10, 300)
    figures = benchmark.pedantic(_cpcv_speedup, args=(frame, names, 10), rounds=1, iterations=1)
    _report(benchmark, figures)
    assert figures["fits"] == 15
