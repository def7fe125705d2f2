"""Shadow comparison: exact P&L divergence, prediction statistics, the gate, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from quantcli.errors import InputError
from quantcli.monitoring.shadow import shadow_compare

T = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=i) for i in range(4)]


def test_identical_models_do_not_diverge():
    rng = np.random.default_rng(0)
    p = rng.normal(size=4)
    r = shadow_compare(T, p, p.copy(), rng.normal(0, 0.01, 4))
    assert r["pnl_divergence"] == 0.0 and r["passed"]
    assert r["prediction"] == {
        "mean_abs_diff": 0.0,
        "max_abs_diff": 0.0,
        "correlation": pytest.approx(1.0),
        "sign_agreement": 1.0,
    }


def test_pnl_divergence_hand_computed():
    realized = np.array([0.10, -0.05, 0.02, 0.01])
    production = np.array([1.0, 1.0, 1.0, 1.0])  # long every period
    candidate = np.array([1.0, -1.0, 1.0, 0.0])  # short the loss, flat the last
    r = shadow_compare(T, candidate, production, realized)
    w_p = 1.10 * 0.95 * 1.02 * 1.01
    w_c = 1.10 * 1.05 * 1.02 * 1.00
    assert r["production"]["cumulative_return"] == pytest.approx(w_p - 1, rel=1e-12)
    assert r["candidate"]["cumulative_return"] == pytest.approx(w_c - 1, rel=1e-12)
    assert r["pnl_divergence"] == pytest.approx(w_c / w_p - 1, rel=1e-12)  # ~ 9.5 %
    assert not r["passed"]
    assert r["prediction"]["sign_agreement"] == 0.5
    assert r["prediction"]["max_abs_diff"] == 2.0
    assert shadow_compare(T, candidate, production, realized, max_pnl_divergence=0.1)["passed"]


def test_same_timestamp_rows_form_one_period():
    ts = [T[0], T[0], T[1]]
    r = shadow_compare(ts, np.array([1.0, -1.0, 1.0]), np.ones(3), np.array([0.02, 0.04, 0.0]))
    # candidate period 1: mean(0.02, -0.04) = -0.01 ; production: 0.03
    assert r["n_periods"] == 2
    assert r["pnl_divergence"] == pytest.approx(abs(0.99 / 1.03 - 1), rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"candidate": np.ones(3)}, "1-D of one length"),
        ({"max_pnl_divergence": -0.1}, "max_pnl_divergence=-0.1"),
        ({"max_pnl_divergence": float("nan")}, "max_pnl_divergence=nan"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, message):
    args = {"ts": T, "candidate": np.ones(4), "production": np.ones(4), "realized": np.zeros(4)}
    with pytest.raises(InputError, match=message):
        shadow_compare(**{**args, **kwargs})


def test_cli_shadow_without_store_is_exit_2(qcli_home, qcli):
    code, _, err = qcli("model", "shadow", "m", "--since", "2024-01-01")
    assert code == 2
    assert "no offline store" in err
