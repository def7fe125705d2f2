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

    from quantcli.serving.onnx_export import to_onnx

    path = tmp_path / "t.onnx"
    onnx.save(to_onnx(models[("synthetic", "lgbm")], 29), str(path))
    rep = benchmark_latency(models[("synthetic", "lgbm")], path, None, synthetic_data.X_test[:50])
    d = rep.to_dict()
    assert [e["engine"] for e in d["engines"]] == ["native", "onnx_fp32"]
    assert d["recommendation"] == d["recommendation_batch"] == "fp32"
    assert d["rationale"] == "no INT8 graph; serve ONNX FP32"
    assert all(np.isfinite(e["single_p50_us"]) and e["single_p50_us"] > 0 for e in d["engines"])
