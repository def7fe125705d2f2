"""Portfolio constructions (sign, rank, vol_target); one horizon shown with a planted signal."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantcli.backtest.costs import CostModel
from quantcli.backtest.portfolio import Construction, rank_weights, sign_weights
from quantcli.backtest.strategy import Strategy
from quantcli.errors import InputError


def test_sign_weights_by_hand():
    p = np.array([[0.3, -0.1, 0.0, np.nan], [np.nan, np.nan, np.nan, np.nan]])
    w = sign_weights(p)
    assert w.tolist() == [[1 / 3, -1 / 3, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


def test_rank_weights_by_hand():
    p = np.array([[0.3, -0.1, 0.2, np.nan, 0.2], [1.0, 1.0, 1.0, 1.0, np.nan]])
    w = rank_weights(p)
    # finite ranks 4, 1, 2.5, -, 2.5: mean 2.5, centered 1.5, -1.5, 0, -, 0; sum |c| = 3
    assert w[0] == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0])
    assert w[1].tolist() == [0.0] * 5  # all tie: no view, no position


@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(2, 12)),
        elements=st.one_of(st.floats(-1e6, 1e6), st.just(np.nan)),
    )
)
def test_rank_weights_are_dollar_neutral_with_gross_one(p):
    w = rank_weights(p)
    assert np.all(w[~np.isfinite(p)] == 0.0)
    for row_p, row_w in zip(p, w, strict=True):
        finite = row_p[np.isfinite(row_p)]
        if finite.size >= 2 and np.ptp(finite) > 0:
            assert abs(row_w.sum()) < 1e-12 and abs(np.abs(row_w).sum() - 1.0) < 1e-12
            # a higher prediction never gets a lower weight
            order = np.argsort(finite, kind="stable")
            assert np.all(np.diff(row_w[np.isfinite(row_p)][order]) >= -1e-15)
        else:
            assert np.all(row_w == 0.0)


def _iid(n_bars: int, n_sym: int, seed: int, vol: float = 0.01):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_bars, n_sym)), rng.normal(0, vol, (n_bars, n_sym))


def test_vol_target_has_no_look_ahead_and_respects_the_leverage_cap():
    preds, r = _iid(400, 5, seed=1)
    c = Construction("vol_target", target_vol=0.10, vol_window=20, max_leverage=1.5)
    reb = np.ones(400, dtype=bool)
    w = c.weights(preds, r, reb, 252.0)
    # flat until 20 returns are known: bar 20 is the first to see bars 0 .. 19
    assert np.all(w[:20] == 0.0) and np.all(w[20] != 0.0)
    assert np.all(np.abs(w).sum(axis=1) <= 1.5 + 1e-12)
    changed = r.copy()
    changed[200:] *= 10  # the future changes: the weights up to bar 200 cannot
    w2 = c.weights(preds, changed, reb, 252.0)
    assert np.array_equal(w[:201], w2[:201]) and not np.array_equal(w[201:], w2[201:])
    # the scale is target / (annualized std of the sign portfolio's last 20 returns)
    base = np.sum(sign_weights(preds) * r, axis=1)
    k = 0.10 / (np.std(base[180:200], ddof=1) * math.sqrt(252))
    assert w[200] == pytest.approx(min(k, 1.5) * sign_weights(preds)[200], rel=1e-12)


def test_vol_target_realizes_about_its_target_volatility():
    preds, r = _iid(3000, 20, seed=2, vol=0.02)
    for target in (0.05, 0.20):
        strat = Strategy(
            Construction("vol_target", target_vol=target, vol_window=60, max_leverage=50),
            CostModel.zero(),
            1,
            252.0,
        )
        gross = strat.run(preds, r, np.zeros_like(r))[0]
        realized = np.std(gross[100:], ddof=1) * math.sqrt(252)
        assert realized == pytest.approx(target, rel=0.15)


def test_construction_refuses_bad_values():
    with pytest.raises(InputError, match="`construction` must be one of sign, rank, vol_target"):
        Construction("kelly")
    with pytest.raises(InputError, match="`target_vol` must be > 0"):
        Construction("vol_target", target_vol=0.0)
    with pytest.raises(InputError, match="`vol_window` must be at least 2 bars"):
        Construction(vol_window=1)


# -- one horizon: a planted signal that pays over exactly h bars -------------------------------
H = 5


def planted_frame(n_sym: int = 12, n_bars: int = 900, seed: int = 11) -> pl.DataFrame:
    """``x_t`` (iid) moves the price over the bar from ``t + H - 1`` to ``t + H``, nothing else:
    the ``H``-bar forward return from ``t`` carries it, the next bar's return does not."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_bars, n_sym))
    r = rng.normal(0, 0.01, (n_bars, n_sym))
    r[H:] += 0.004 * x[:-H]  # r[t] is the return from bar t - 1 to bar t
    close = 100 * np.cumprod(1 + r, axis=0)
    t0 = datetime(2020, 1, 1, tzinfo=UTC)
    ts = [t0 + timedelta(days=i) for i in range(n_bars)]
    rows = []
    for i in range(n_sym):
        c = close[:, i]
        fwd_h = np.r_[c[H:] / c[:-H] - 1, [np.nan] * H]
        fwd_1 = np.r_[c[1:] / c[:-1] - 1, [np.nan]]
        rows.append(
            pl.DataFrame(
                {
                    "symbol": f"S{i:02d}",
                    "ts": ts,
                    "x": x[:, i],
                    "fwd_h": fwd_h,
                    "fwd_return_1d": fwd_1,
                    "end_h": [*ts[H:], *[None] * H],
                    "end_1": [*ts[1:], None],
                }
            )
        )
    return pl.concat(rows).drop_nulls().filter(pl.col("fwd_h").is_not_nan()).sort("ts", "symbol")


class OLS:
    """Least squares with an intercept: enough to find a linear planted signal."""

    def fit(self, X, y):
        A = np.column_stack([np.ones(len(X)), X])
        self.coef = np.linalg.lstsq(A, y, rcond=None)[0]
        return self

    def predict(self, X):
        return np.column_stack([np.ones(len(X)), X]) @ self.coef


def ols_factory(params):
    return OLS()


@pytest.fixture(scope="module")
def planted():
    return planted_frame()


def _backtest(frame: pl.DataFrame, label: str, end: str, construction: str = "sign"):
    from quantcli.backtest import CombinatorialPurgedCV
    from quantcli.backtest.engine import run_cpcv_backtest

    return run_cpcv_backtest(
        frame.with_columns(label=pl.col(label), label_end=pl.col(end)),
        ["x"],
        model_factory=ols_factory,
        cv=CombinatorialPurgedCV(n_groups=6, n_test_groups=2, embargo_pct=0.01),
        construction={"construction": construction},
        periods_per_year=252,
    )


@pytest.mark.parametrize("construction", ["sign", "rank", "vol_target"])
def test_planted_signal_pays_at_its_horizon(planted, construction):
    res = _backtest(planted, "fwd_h", "end_h", construction)
    assert res.strategy["holding_bars"] == H and res.strategy["rebalance_every_bars"] == H
    m = res.metrics
    assert m["sharpe"] > 1.5 and m["psr"] > 0.99, m  # net of the default costs
    assert m["sharpe_min"] > 0.5
    assert m["turnover_annual"] > 0 and 0 < m["cost_drag_annual"] < 0.05


def test_no_edge_at_the_wrong_horizon(planted):
    # trained on the next bar's return, the model finds nothing (x_t moves bar t + H only) ...
    one_bar = _backtest(planted, "fwd_return_1d", "end_1")
    assert one_bar.strategy["holding_bars"] == 1
    assert abs(one_bar.metrics["gross_sharpe"]) < 1.0
    assert one_bar.metrics["sharpe"] < 0.5  # daily rebalancing pays costs for nothing
    # ... and the H-bar model held one bar (the old rule) earns nothing either: the bar after
    # t carries x_{t-H+1}, not x_t
    right = _backtest(planted, "fwd_h", "end_h")
    frame = planted.sort("ts", "symbol")
    from quantcli.backtest.strategy import Panel

    codes = frame["symbol"].rank("dense").to_numpy().astype(np.int64) - 1
    panel = Panel.from_keys(frame["ts"].to_numpy(), codes)
    r = panel.dense(frame["fwd_return_1d"].to_numpy())
    held_one = Strategy(Construction("sign"), CostModel.zero(), 1, 252.0)
    held_h = Strategy(Construction("sign"), CostModel.zero(), H, 252.0)
    sharpes_one, sharpes_h = [], []
    for p in range(right.path_predictions.shape[0]):
        preds = panel.dense(right.path_predictions[p])
        for strat, out in ((held_one, sharpes_one), (held_h, sharpes_h)):
            gross = strat.run(preds, r, np.zeros_like(r))[0]
            out.append(gross.mean() / gross.std(ddof=1) * math.sqrt(252))
    assert abs(np.median(sharpes_one)) < 1.0
    assert np.median(sharpes_h) > 1.5
