"""ONNX serving latency against the peer, native LightGBM ``Booster.predict``, in the same run.

Model (the STACK.md reference): LightGBM, 300 trees, 31 leaves, 29 features, one thread; and
the ensemble (those trees + the MLP of ``make_model("mlp")``) as one ONNX graph, FP32 and INT8.
Latencies are per call, p50 over interleaved repeats (``perf_counter_ns``), in microseconds.

Budgets and goals:
* one row: ONNX at least 3x faster than ``Booster.predict`` (goal of issue 6), ONNX p50 < 100 us;
* 1,000 rows: ONNX not slower than ``Booster.predict`` (ratio >= 1), ONNX p50 < 20 ms;
* in-process ``InferenceRuntime.predict`` of one validated row (the ``qcli predict`` and HTTP hot
  path): p99 < 3 ms (the best of 3 blocks of 1,000 calls, so one burst of load from another
  process does not decide it);
* ensemble INT8 vs FP32: measured and reported (``extra_info``); asserted only as a budget (INT8
  p50 < 1 ms for one row), because on this tiny MLP behind 300 trees INT8 is NOT reliably faster
  (see docs/serving.md).

Under ``--benchmark-disable`` (the CI smoke run) every test still runs its code with few repeats
but asserts no timing: a smoke run on a shared machine measures the neighbours, not quantcli.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import onnx
import pytest

N_FEATURES = 29


@pytest.fixture(scope="module")
def bench_models(tmp_path_factory):
    from sklearn.exceptions import ConvergenceWarning

    from quantcli.models.estimators import EnsembleRegressor, make_model
    from quantcli.serving.onnx_export import to_onnx
    from quantcli.serving.quantize import quantize_int8

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, N_FEATURES))
    y = np.tanh(X @ rng.normal(size=N_FEATURES) / 5) + 0.1 * rng.normal(size=5000)
    lgbm = make_model("lgbm", {"n_estimators": 300, "num_leaves": 31}, seed=1).fit(X, y)
    with warnings.catch_warnings():
        # a capped max_iter keeps set-up short; latency does not depend on convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = make_model("mlp", {"max_iter": 30}, seed=1).fit(X, y)
    d = tmp_path_factory.mktemp("onnx_bench")
    paths = {"lgbm": d / "lgbm.onnx", "ens_fp32": d / "ens.onnx"}
    onnx.save(to_onnx(lgbm, N_FEATURES), str(paths["lgbm"]))
    onnx.save(
        to_onnx(EnsembleRegressor([("lgbm", lgbm), ("mlp", mlp)]), N_FEATURES),
        str(paths["ens_fp32"]),
    )
    for method in ("dynamic", "weight-only"):
        q = quantize_int8(paths["ens_fp32"], d / f"ens.{method}.onnx", method=method)
        assert q.quantized
        paths[f"ens_int8_{method}"] = d / f"ens.{method}.onnx"
    return {"X": X, "booster": lgbm.booster_, "paths": paths}


def _native_fn(booster):
    """``Booster.predict`` on one thread, like the ONNX session (and STACK.md's reference)."""
    return lambda A: booster.predict(A, num_threads=1)


def _session_fn(path):
    from quantcli.serving.runtime import make_session

    sess = make_session(path)
    name, outs = sess.get_inputs()[0].name, [sess.get_outputs()[0].name]
    return lambda A: sess.run(outs, {name: A})


def _interleaved_p50(fns: dict, args: dict, repeats: int) -> dict[str, float]:
    """p50 (us) of each fn, calls interleaved so machine load hits every engine alike."""
    for name, fn in fns.items():
        for _ in range(20):
            fn(args[name])
    times = {name: np.empty(repeats) for name in fns}
    clock = time.perf_counter_ns
    for i in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn(args[name])
            times[name][i] = clock() - t0
    return {name: float(np.percentile(t, 50) / 1e3) for name, t in times.items()}


def test_native_booster_single_row(benchmark, bench_models):
    x = bench_models["X"][:1]
    benchmark(_native_fn(bench_models["booster"]), x)


def test_onnx_single_row(benchmark, bench_models):
    x = bench_models["X"][:1].astype(np.float32)
    benchmark(_session_fn(bench_models["paths"]["lgbm"]), x)


def test_onnx_vs_native_single_row_ratio(benchmark, bench_models):
    X = bench_models["X"]
    fns = {
        "native": _native_fn(bench_models["booster"]),
        "onnx": _session_fn(bench_models["paths"]["lgbm"]),
    }
    args = {"native": X[:1], "onnx": X[:1].astype(np.float32)}
    p50 = _interleaved_p50(fns, args, repeats=20 if benchmark.disabled else 2000)
    ratio = p50["native"] / p50["onnx"]
    benchmark.extra_info.update({f"{k}_p50_us": v for k, v in p50.items()}, ratio=ratio)
    benchmark.pedantic(fns["onnx"], args=(args["onnx"],), rounds=1, iterations=1)
    print(
        f"\none row: native {p50['native']:.1f} us, onnx {p50['onnx']:.1f} us, ratio {ratio:.2f}x"
    )
    if benchmark.disabled:
        return
    assert ratio >= 3.0, p50
    assert p50["onnx"] < 100.0, p50


def test_onnx_vs_native_batch_1000_ratio(benchmark, bench_models):
    X = bench_models["X"][:1000]
    fns = {
        "native": _native_fn(bench_models["booster"]),
        "onnx": _session_fn(bench_models["paths"]["lgbm"]),
    }
    args = {"native": X, "onnx": X.astype(np.float32)}
    p50 = _interleaved_p50(fns, args, repeats=3 if benchmark.disabled else 60)
    ratio = p50["native"] / p50["onnx"]
    benchmark.extra_info.update({f"{k}_p50_us": v for k, v in p50.items()}, ratio=ratio)
    benchmark.pedantic(fns["onnx"], args=(args["onnx"],), rounds=1, iterations=1)
    print(
        f"\n1000 rows: native {p50['native']:.0f} us, onnx {p50['onnx']:.0f} us, ratio {ratio:.2f}x"
    )
    if benchmark.disabled:
        return
    assert ratio >= 1.0, p50
    assert p50["onnx"] < 20_000.0, p50


def test_runtime_predict_one_row_in_process(benchmark, bench_models, qcli_home):
    """The full validated call (names, dtype, NaN policy) that `qcli predict` and HTTP use."""
    from quantcli.integrity import sign_file
    from quantcli.serving.runtime import InferenceRuntime

    path = bench_models["paths"]["ens_fp32"]
    sha, sig = sign_file(path)
    rt = InferenceRuntime(path, sha, sig, [f"f{i}" for i in range(N_FEATURES)], {"model_name": "b"})
    row = bench_models["X"][:1]
    for _ in range(50):
        rt.predict(row)
    blocks = []
    for _ in range(1 if benchmark.disabled else 3):
        t = np.empty(20 if benchmark.disabled else 1000)
        for i in range(len(t)):
            t0 = time.perf_counter_ns()
            rt.predict(row)
            t[i] = time.perf_counter_ns() - t0
        blocks.append(np.percentile(t, [50, 99]) / 1e3)
    p50, p99 = min(blocks, key=lambda b: b[1])
    benchmark.extra_info.update(p50_us=float(p50), p99_us=float(p99))
    benchmark.pedantic(rt.predict, args=(row,), rounds=1, iterations=1)
    print(f"\nInferenceRuntime.predict one row (ensemble FP32): p50 {p50:.1f} us, p99 {p99:.1f} us")
    if benchmark.disabled:
        return
    assert p99 < 3000.0, (p50, p99)


def test_ensemble_int8_vs_fp32(benchmark, bench_models):
    paths = bench_models["paths"]
    x = bench_models["X"][:1].astype(np.float32)
    xb = bench_models["X"][:1000].astype(np.float32)
    names = ("ens_fp32", "ens_int8_dynamic", "ens_int8_weight-only")
    fns = {n: _session_fn(paths[n]) for n in names}
    single = _interleaved_p50(
        fns, dict.fromkeys(names, x), repeats=10 if benchmark.disabled else 1000
    )
    batch = _interleaved_p50(fns, dict.fromkeys(names, xb), repeats=2 if benchmark.disabled else 40)
    sizes = {n: paths[n].stat().st_size for n in names}
    info = {
        **{f"{n}_single_p50_us": v for n, v in single.items()},
        **{f"{n}_batch_p50_us": v for n, v in batch.items()},
        **{f"{n}_bytes": v for n, v in sizes.items()},
    }
    benchmark.extra_info.update(info)
    benchmark.pedantic(fns["ens_int8_dynamic"], args=(x,), rounds=1, iterations=1)
    print("\nensemble one row p50 (us):", {k: round(v, 1) for k, v in single.items()})
    print("ensemble 1000 rows p50 (us):", {k: round(v) for k, v in batch.items()})
    print("sizes (bytes):", sizes)
    for n in names[1:]:
        assert sizes[n] < sizes["ens_fp32"]
    if benchmark.disabled:
        return
    for n in names[1:]:
        assert single[n] < 1000.0, single
