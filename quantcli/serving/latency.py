"""Native vs ONNX FP32 vs ONNX INT8: latency and size, with a recommendation.

Each engine is timed on the same rows: a single row (the serving case) and a batch of 1,000 rows
(padded by cycling the sample when it is smaller). Times are wall-clock ``perf_counter_ns`` per
call, after warm-up, reported as p50 and p99 in **microseconds**. ONNX sessions run with one
intra-op thread (the serving setting), called the way the runtime calls them
(:class:`~quantcli.serving.runtime.OnnxRunner`), FP32 and INT8 interleaved call by call; the
native model is called as the registry loads it (``Booster.predict`` for LightGBM, with
``num_threads=1``).

Recommendations, one per batch size (``recommendation`` for one row -- the serving case, the
graph ``InferenceRuntime.from_registry(precision="auto")`` loads -- and ``recommendation_batch``
for 1,000 rows): INT8 only when an INT8 graph exists, passed its parity gate, and its p50 is at
least :data:`MIN_SPEEDUP` times faster than FP32's at that batch size (a margin, so timing noise
on a shared machine cannot crown it); otherwise FP32. An INT8 graph that is smaller but not
faster is reported as such and not recommended.

The INT8 ceiling (Amdahl's law): onnxruntime's quantizers make only the MatMul/Gemm operators
integer, so INT8 can at best remove the time FP32 spends in them. :func:`matmul_share` profiles
the FP32 graph (onnxruntime's own per-kernel timings) and reports that time as a share of the
whole run; ``1 / (1 - share)`` is the most any INT8 graph of this model could gain. The report
states it, so "INT8 is not faster" comes with its reason: for a tree-dominated ensemble the
share is a few percent and no quantization can change that.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from quantcli.models.native import ensemble_members, single_model
from quantcli.results import Result
from quantcli.serving.session import OnnxRunner, make_session

BATCH_ROWS = 1000
# INT8 must beat FP32's p50 by this factor to be recommended (5 %: above run-to-run noise)
MIN_SPEEDUP = 1.05
# the operators onnxruntime's quantizers rewrite, as named after its graph fusions
MATMUL_KERNELS = frozenset({"MatMul", "Gemm", "FusedMatMul", "FusedGemm"})


@dataclass
class EngineTiming:
    """Latency of one engine: p50/p99 per call in microseconds, and its size on disk."""

    engine: str
    single_p50_us: float
    single_p99_us: float
    batch_p50_us: float
    batch_p99_us: float
    size_bytes: int | None


@dataclass(frozen=True, kw_only=True)
class LatencyReport(Result):
    """Timings of every engine, the ratios that matter, and the recommendation.

    A measurement, not a gate: ``passed`` is always True.
    """

    passed: bool = True
    repeats: int
    batch_rows: int
    engines: list[EngineTiming] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    recommendation: str = "fp32"
    rationale: str = ""
    recommendation_batch: str = "fp32"
    rationale_batch: str = ""
    # {"single"|"batch": {"matmul_share": fraction of FP32 run time in MatMul/Gemm kernels,
    #                     "int8_ceiling": 1 / (1 - share), the most INT8 could speed it up}}
    int8_ceiling: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["passed"], d["reasons"]
        return d


def _time_calls(fn, arg, repeats: int, warmup: int = 10) -> tuple[float, float]:
    for _ in range(warmup):
        fn(arg)
    t = np.empty(repeats)
    clock = time.perf_counter_ns
    for i in range(repeats):
        t0 = clock()
        fn(arg)
        t[i] = clock() - t0
    return float(np.percentile(t, 50) / 1e3), float(np.percentile(t, 99) / 1e3)


def _time_interleaved(fns: dict, arg, repeats: int, warmup: int = 10) -> dict:
    """``{name: (p50, p99)}`` in microseconds, the calls of all ``fns`` interleaved."""
    for fn in fns.values():
        for _ in range(warmup):
            fn(arg)
    t = {name: np.empty(repeats) for name in fns}
    clock = time.perf_counter_ns
    for i in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn(arg)
            t[name][i] = clock() - t0
    return {
        name: (float(np.percentile(v, 50) / 1e3), float(np.percentile(v, 99) / 1e3))
        for name, v in t.items()
    }


def _native_fn(model: Any):
    """The native model's predict, with LightGBM on one thread (like the ONNX session).

    OpenMP worker threads would otherwise spin between calls and skew both engines' timings.
    An ensemble is timed as the weighted sum of its members, exactly as it predicts.
    """
    model = single_model(model)
    members = ensemble_members(model)
    if members is not None:
        fns = [(_native_fn(m), w) for m, w in members]
        return lambda X: sum(w * np.asarray(f(X)).reshape(-1) for f, w in fns)
    booster = getattr(model, "booster_", model if hasattr(model, "num_trees") else None)
    if booster is not None:  # the registry serves the Booster, not the sklearn wrapper
        return lambda X: booster.predict(X, num_threads=1)
    return model.predict


def matmul_share(onnx_path: str | os.PathLike[str], X: np.ndarray, runs: int = 20) -> float:
    """Fraction of the graph's run time spent in MatMul/Gemm kernels, from onnxruntime's profiler.

    The session is the serving one (one intra-op thread, every graph optimization), profiled
    over ``runs`` calls on the float32 rows ``X``: the summed ``*_kernel_time`` of the
    :data:`MATMUL_KERNELS` nodes over the summed ``model_run`` time (which includes the
    executor's own overhead, the part no quantization touches). The profile file is deleted.
    """
    with tempfile.TemporaryDirectory(prefix="qcli-profile-") as tmp:
        sess = make_session(onnx_path, profile_prefix=os.path.join(tmp, "run"))
        feed = {sess.get_inputs()[0].name: np.ascontiguousarray(X, dtype=np.float32)}
        for _ in range(int(runs)):
            sess.run(None, feed)
        with open(sess.end_profiling()) as fh:
            events = json.load(fh)
    total = sum(e["dur"] for e in events if e.get("name") == "model_run")
    matmul = sum(
        e["dur"]
        for e in events
        if e.get("cat") == "Node"
        and e["name"].endswith("_kernel_time")
        and e.get("args", {}).get("op_name") in MATMUL_KERNELS
    )
    return float(matmul / total) if total > 0 else 0.0


def benchmark_latency(
    model: Any,
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str] | None,
    X: np.ndarray,
    *,
    repeats: int = 200,
    int8_parity_passed: bool | None = None,
) -> LatencyReport:
    """Time native, ONNX FP32 and (if given) ONNX INT8 on rows of ``X`` (float features)."""
    X = np.asarray(X, dtype=np.float64)
    reps = max(int(repeats), 20)
    batch_idx = np.arange(BATCH_ROWS) % X.shape[0]
    one64, batch64 = X[:1], X[batch_idx]
    one32, batch32 = one64.astype(np.float32), batch64.astype(np.float32)
    engines = [EngineTiming("native", *_time_native(model, one64, batch64, reps), size_bytes=None)]

    # FP32 and INT8 are timed interleaved (call by call), so load from other processes hits
    # both alike: their ratio decides the recommendation. Each runs through the runtime's call.
    runners = {
        engine: OnnxRunner(make_session(path))
        for engine, path in (("onnx_fp32", fp32_path), ("onnx_int8", int8_path))
        if path is not None
    }
    single = _time_interleaved(runners, one32, reps)
    batch = _time_interleaved(runners, batch32, max(reps // 10, 20))
    for engine, path in (("onnx_fp32", fp32_path), ("onnx_int8", int8_path)):
        if engine in runners:
            size = os.path.getsize(path)
            engines.append(EngineTiming(engine, *single[engine], *batch[engine], size))

    by = {e.engine: e for e in engines}
    nat, fp, int8 = by["native"], by["onnx_fp32"], by.get("onnx_int8")
    ratios = {
        "native_over_fp32_single": nat.single_p50_us / fp.single_p50_us,
        "native_over_fp32_batch": nat.batch_p50_us / fp.batch_p50_us,
    }
    if int8 is not None:
        ratios["fp32_over_int8_single"] = fp.single_p50_us / int8.single_p50_us
        ratios["fp32_over_int8_batch"] = fp.batch_p50_us / int8.batch_p50_us
        ratios["int8_size_over_fp32"] = int8.size_bytes / fp.size_bytes
    ceiling = {}
    for which, rows in (("single", one32), ("batch", batch32)):
        share = matmul_share(fp32_path, rows, runs=max(reps // 10, 20))
        ceiling[which] = {"matmul_share": share, "int8_ceiling": 1 / (1 - share)}
    recs = {}
    for which, label in (("single", "one row"), ("batch", f"{BATCH_ROWS} rows")):
        choice, why = _recommend(fp, int8, int8_parity_passed, which, label)
        if choice == "fp32" and int8 is not None:
            c = ceiling[which]
            why += (
                f"; MatMul/Gemm kernels are {100 * c['matmul_share']:.1f} % of FP32's time for "
                f"{label}, so no INT8 graph of this model can be more than "
                f"{c['int8_ceiling']:.2f}x faster"
            )
        recs[which] = (choice, why)
    return LatencyReport(
        repeats=reps,
        batch_rows=BATCH_ROWS,
        engines=engines,
        ratios=ratios,
        recommendation=recs["single"][0],
        rationale=recs["single"][1],
        recommendation_batch=recs["batch"][0],
        rationale_batch=recs["batch"][1],
        int8_ceiling=ceiling,
    )


def _time_native(model: Any, one: np.ndarray, batch: np.ndarray, reps: int) -> tuple:
    """``(single p50, single p99, batch p50, batch p99)`` of the native model, microseconds."""
    native = _native_fn(model)
    return (*_time_calls(native, one, reps), *_time_calls(native, batch, max(reps // 10, 20)))


def _recommend(
    fp: EngineTiming, int8: EngineTiming | None, passed: bool | None, which: str, label: str
) -> tuple[str, str]:
    """``(precision, rationale)`` for one batch size (``which`` = ``single`` or ``batch``)."""
    if int8 is None:
        return "fp32", "no INT8 graph; serve ONNX FP32"
    if passed is False:
        return "fp32", "INT8 failed its parity gate; serve ONNX FP32"
    t_fp, t_q = getattr(fp, f"{which}_p50_us"), getattr(int8, f"{which}_p50_us")
    if t_q * MIN_SPEEDUP <= t_fp:
        return "int8", f"INT8 passed parity and is {t_fp / t_q:.2f}x faster than FP32 for {label}"
    return "fp32", (
        f"INT8 passed parity but is not faster for {label} ({t_q:.1f} us vs {t_fp:.1f} us, "
        f"needs {MIN_SPEEDUP:.2f}x); serve ONNX FP32"
    )


def render_latency(report: dict[str, Any]) -> str:
    """A plain-text table of a :meth:`LatencyReport.to_dict`."""
    lines = [
        f"latency (us per call; batch = {report['batch_rows']} rows; {report['repeats']} repeats)",
        f"{'engine':<10} {'1-row p50':>10} {'1-row p99':>10} {'batch p50':>11} "
        f"{'batch p99':>11} {'size (bytes)':>13}",
    ]
    for e in report["engines"]:
        size = "-" if e["size_bytes"] is None else f"{e['size_bytes']:,}"
        lines.append(
            f"{e['engine']:<10} {e['single_p50_us']:>10.1f} {e['single_p99_us']:>10.1f} "
            f"{e['batch_p50_us']:>11.1f} {e['batch_p99_us']:>11.1f} {size:>13}"
        )
    for k, v in report["ratios"].items():
        lines.append(f"{k}: {v:.2f}")
    for which, c in report.get("int8_ceiling", {}).items():
        lines.append(
            f"INT8 ceiling, {which}: MatMul/Gemm {100 * c['matmul_share']:.1f} % of FP32 time, "
            f"at most {c['int8_ceiling']:.2f}x"
        )
    lines.append(f"recommendation, one row: {report['recommendation']} ({report['rationale']})")
    if "recommendation_batch" in report:
        lines.append(
            f"recommendation, {report['batch_rows']} rows: {report['recommendation_batch']} "
            f"({report['rationale_batch']})"
        )
    return "\n".join(lines)
