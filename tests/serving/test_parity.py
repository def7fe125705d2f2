"""The parity metrics and gate, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantcli.errors import InputError
from quantcli.serving.parity import ONNXParityTester, parity_metrics


def test_metrics_match_hand_computed_values():
    ref = np.array([0.010, -0.020, 0.030, 0.0005])
    got = np.array([0.011, -0.020, 0.028, -0.0005])
    m = parity_metrics(ref, got, atol=1e-3, rtol=1e-2)
    d = np.array([0.001, 0.0, -0.002, -0.001])
    assert m["mae"] == pytest.approx(0.001)
    assert m["rmse"] == pytest.approx(math.sqrt((1e-6 + 4e-6 + 1e-6) / 4))
    assert m["max_abs_diff"] == pytest.approx(0.002)
    assert m["relative_error_pct"] == pytest.approx(100 * 0.004 / 0.0605)
    # row 4 changes sign, but |ref| = 5e-4 <= atol: a coin toss at any precision, not counted
    assert m["flipped_decisions"] == 0 and m["decided_rows"] == 3
    # |d| <= atol + rtol |ref|: rows 1, 2, 4 (row 3: 0.002 > 0.0013)
    assert m["within_tolerance_pct"] == pytest.approx(75.0)
    assert np.allclose(d, got - ref)


def test_flipped_decision_counts_and_fails_the_gate():
    ref = np.array([0.01, 0.02, -0.01, 0.03] * 25)
    got = ref.copy()
    got[0] = -0.01  # one flipped long -> short out of 100
    passed, m = ONNXParityTester(max_loss_pct=1.0).evaluate(ref, got)
    assert m["flipped_decisions"] == 1 and m["flipped_pct"] == pytest.approx(1.0)
    assert not passed  # 1 % is not < 1 %
    assert any("flipped long/short decisions" in r for r in m["reasons"])
    assert m["loss_pct"] == pytest.approx(max(m["relative_error_pct"], 1.0))


def test_identical_predictions_pass_with_zero_loss():
    ref = np.linspace(-0.05, 0.05, 101)
    passed, m = ONNXParityTester().evaluate(ref, ref.copy())
    assert passed and m["loss_pct"] == 0.0 and m["max_abs_diff"] == 0.0


def test_relative_error_gate_boundary():
    ref = np.full(10, 0.01)
    got = ref * 1.002  # 0.2 % relative error
    assert ONNXParityTester(max_loss_pct=1.0).evaluate(ref, got)[0]
    passed, m = ONNXParityTester(max_loss_pct=0.1).evaluate(ref, got)
    assert not passed and m["relative_error_pct"] == pytest.approx(0.2)


def test_non_finite_onnx_output_fails():
    passed, m = ONNXParityTester().evaluate(np.ones(3), np.array([1.0, np.nan, 1.0]))
    assert not passed and not m["all_finite"]


def test_parameters_are_checked():
    with pytest.raises(InputError, match="atol"):
        ONNXParityTester(atol=-1)
    with pytest.raises(InputError, match="max_loss_pct"):
        ONNXParityTester(max_loss_pct=0)
    with pytest.raises(InputError, match="lengths differ"):
        parity_metrics(np.ones(3), np.ones(4))
