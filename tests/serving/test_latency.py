"""The export report's recommendation: INT8 only where it passed parity AND measured faster."""

from __future__ import annotations

import numpy as np
import pytest

from quantcli.serving.latency import MIN_SPEEDUP, EngineTiming, _recommend, benchmark_latency


def _t(engine: str, single: float, batch: float) -> EngineTiming:
    return EngineTiming(engine, single, 2 * single, batch, 2 * batch, 1000)


@pytest.mark.parametrize(
    ("int8_single", "passed", "expected"),
    [
        (50.0, True, "int8"),  # 2x faster, parity passed
        (100.0 / MIN_SPEEDUP + 0.01, True, "fp32"),  # faster, but inside the noise margin
        (100.0 / MIN_SPEEDUP - 0.01, True, "int8"),  # just outside it
        (50.0, False, "fp32"),  # faster but failed parity
        (150.0, True, "fp32"),  # slower
    ],
)
def test_int8_recommended_only_when_faster_and_passed(int8_single, passed, expected):
    fp, q = _t("onnx_fp32", 100.0, 10_000.0), _t("onnx_int8", int8_single, 10_000.0)
    choice, why = _recommend(fp, q, passed, "single", "one row")
    assert choice == expected, why
    assert _recommend(fp, None, True, "single", "one row")[0] == "fp32"


def test_each_batch_size_gets_its_own_verdict():
    fp, q = _t("onnx_fp32", 50.0, 40_000.0), _t("onnx_int8", 52.0, 20_000.0)
    assert _recommend(fp, q, True, "single", "one row")[0] == "fp32"
    choice, why = _recommend(fp, q, True, "batch", "1000 rows")
    assert choice == "int8" and "2.00x faster" in why


def test_report_of_a_real_export_says_why(models, synthetic_data, tmp_path):
    import onnx

    from quantcli.models.onnx_convert import to_onnx

    path = tmp_path / "t.onnx"
    onnx.save(to_onnx(models[("synthetic", "lgbm")], 29), str(path))
    rep = benchmark_latency(models[("synthetic", "lgbm")], path, None, synthetic_data.X_test[:50])
    d = rep.to_dict()
    assert [e["engine"] for e in d["engines"]] == ["native", "onnx_fp32"]
    assert d["recommendation"] == d["recommendation_batch"] == "fp32"
    assert d["rationale"] == "no INT8 graph; serve ONNX FP32"
    assert all(np.isfinite(e["single_p50_us"]) and e["single_p50_us"] > 0 for e in d["engines"])


def test_matmul_share_is_zero_for_trees_and_bounds_int8_for_the_ensemble(
    models, synthetic_data, tmp_path
):
    """The INT8 ceiling comes from onnxruntime's own kernel timings of the FP32 graph.

    A tree graph has no MatMul/Gemm kernel: share exactly 0, ceiling 1. An MLP's share and the
    ensemble's (the same MLP kernels plus the trees) are real fractions. Which of the two is
    larger is a matter of timing under load, so it is not asserted here.
    """
    import onnx

    from quantcli.models.onnx_convert import to_onnx
    from quantcli.serving.latency import matmul_share

    X = synthetic_data.X_test[:1000].astype(np.float32)
    share = {}
    for kind in ("lgbm", "mlp", "ensemble"):
        path = tmp_path / f"{kind}.onnx"
        onnx.save(to_onnx(models[("synthetic", kind)], 29), str(path))
        share[kind] = matmul_share(path, X, runs=5)
    assert share["lgbm"] == 0.0
    assert 0.0 < share["mlp"] < 1.0
    assert 0.0 < share["ensemble"] < 1.0, share


def test_fp32_verdict_for_an_int8_graph_states_the_ceiling(models, unit_scale_data, tmp_path):
    import onnx

    from quantcli.models.onnx_convert import to_onnx
    from quantcli.serving.quantize import quantize_int8

    ens = models[("unit", "ensemble")]
    fp32, int8 = tmp_path / "e.onnx", tmp_path / "e.int8.onnx"
    onnx.save(to_onnx(ens, 29), str(fp32))
    assert quantize_int8(fp32, int8, method="dynamic").quantized
    d = benchmark_latency(ens, fp32, int8, unit_scale_data.X_test[:50], repeats=20).to_dict()
    for which, attr in (("single", "rationale"), ("batch", "rationale_batch")):
        c = d["int8_ceiling"][which]
        assert 0.0 < c["matmul_share"] < 1.0
        assert c["int8_ceiling"] == pytest.approx(1 / (1 - c["matmul_share"]))
        if d[attr.replace("rationale", "recommendation")] == "fp32":
            assert f"{c['int8_ceiling']:.2f}x faster" in d[attr], d[attr]
    # and a real export's report renders it
    from quantcli.serving.latency import render_latency

    assert "INT8 ceiling, batch: MatMul/Gemm" in render_latency(d)
