"""Net returns: an independent cash-and-shares ledger on the bundled sample, costs, break-even.

The oracle is a ledger written here from first principles (cash, share counts, fees charged on
traded value, borrow on the value of short shares), not from quantcli's weight algebra. vectorbt's
``Portfolio.from_orders`` was the first choice: its current release needs pandas 3 (Feast pins
pandas < 3), and the last release that accepts pandas 2 fails to import beside plotly 6.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantcli.backtest.costs import BPS, CostModel, atr_over_close, rolling_std
from quantcli.backtest.portfolio import Construction
from quantcli.backtest.strategy import Strategy, break_even_bps

PPY = 252.0


@pytest.fixture(scope="module")
def sample_prices() -> pd.DataFrame:
    """Closes of the bundled real sample (IXIC, SPX) on their common dates, one column each."""
    from quantcli.data.sample import load_sample

    wide = (
        load_sample()
        .pivot(on="symbol", index="ts", values=["close", "high", "low"])
        .drop_nulls()
        .sort("ts")
    )
    return wide.to_pandas().set_index("ts")


def ledger(
    close: np.ndarray,
    targets: dict[int, np.ndarray],
    fee_rate: np.ndarray,
    borrow_per_bar: float,
) -> np.ndarray:
    """Per-bar returns of a cash-and-shares account starting with 1.0 of cash.

    At a bar ``t`` in ``targets`` the account buys or sells shares so each position's value is
    ``targets[t][i]`` times its equity at ``close[t]``, paying ``fee_rate[t, i]`` times the
    traded value in cash. Over the bar to ``t + 1`` it pays ``borrow_per_bar`` times the value of
    its short shares at ``close[t]``. Return of bar ``t``: equity at ``t + 1`` over equity at
    ``t`` (before that bar's trades), minus 1.
    """
    n_bars, n_sym = close.shape
    cash, shares = 1.0, np.zeros(n_sym)
    out = np.zeros(n_bars - 1)
    for t in range(n_bars - 1):
        equity = cash + float(shares @ close[t])
        if t in targets:
            wanted = targets[t] * equity / close[t]
            traded_value = (wanted - shares) * close[t]
            cash -= traded_value.sum() + float(np.abs(traded_value) @ fee_rate[t])
            shares = wanted
        short_value = float(np.clip(-shares, 0, None) @ close[t])
        cash -= borrow_per_bar * short_value
        out[t] = (cash + float(shares @ close[t + 1])) / equity - 1.0
    return out


@pytest.mark.parametrize("slippage", ["fixed", "volatility", "atr"])
@pytest.mark.parametrize("construction", ["sign", "rank"])
def test_net_returns_match_an_independent_ledger_on_the_sample(
    sample_prices, slippage, construction
):
    close = sample_prices[["close_IXIC", "close_SPX"]].to_numpy()
    high = sample_prices[["high_IXIC", "high_SPX"]].to_numpy()
    low = sample_prices[["low_IXIC", "low_SPX"]].to_numpy()
    n_bars = close.shape[0]
    assert n_bars > 5000  # real data: 20 years of daily bars
    h = 5
    # predictions: 20-bar momentum, a rule whose sign flips often enough to trade both ways
    momentum = close / np.vstack([np.full((20, 2), np.nan), close[:-20]]) - 1
    costs = CostModel(1.0, 2.0, slippage, 2.0, 0.05, 14, 50.0)

    # quantcli: per-bar returns r[t] = close[t + 1] / close[t] - 1 on the bars 0 .. n - 2
    r = close[1:] / close[:-1] - 1
    past = np.vstack([np.full((1, 2), np.nan), r[:-1]])
    unit_cost = costs.unit_cost(past, atr_over_close(high, low, close, 14)[:-1])
    strat = Strategy(Construction(construction), costs, h, PPY)
    gross, net, turnover, trading, borrow = strat.run(momentum[:-1], r, unit_cost)

    # the oracle's own targets, fee rates (pandas rolling std, TA-Lib ATR) and borrow
    targets = {}
    for t in range(0, n_bars - 1, h):
        m = momentum[t]
        if construction == "sign":
            ok = np.isfinite(m)
            targets[t] = np.where(ok, np.sign(np.where(ok, m, 0)) / max(ok.sum(), 1), 0.0)
        else:  # two symbols, dollar-neutral: +0.5 on the higher prediction, -0.5 on the lower
            targets[t] = (
                np.zeros(2)
                if not np.isfinite(m).all() or m[0] == m[1]
                else np.where(m == m.max(), 0.5, -0.5)
            )
    if slippage == "fixed":
        slip = np.full(close.shape, 2.0 * BPS)
    elif slippage == "volatility":
        vol = pd.DataFrame(close).pct_change().rolling(14).std().to_numpy()
        slip = np.where(np.isfinite(vol), 0.05 * vol, 2.0 * BPS)
    else:
        import talib

        atr = np.column_stack([talib.ATR(high[:, i], low[:, i], close[:, i], 14) for i in range(2)])
        slip = np.where(np.isfinite(atr), 0.05 * atr / close, 2.0 * BPS)
    fee = 3.0 * BPS + slip
    expected = ledger(close, targets, fee, 50.0 * BPS / PPY)

    assert np.max(np.abs(net - expected)) < 1e-10
    # the ledger really paid something: costs are not a rounding error here
    assert np.sum(trading) > 0.01 and np.sum(borrow) > 0.001
    assert np.allclose(net, gross - trading - borrow, rtol=0, atol=1e-15)
    off = np.arange(turnover.size) % h != 0
    assert np.all(turnover[off] == 0.0) and turnover[~off].sum() > 1.0  # trades every h bars


def test_zero_costs_make_net_equal_gross(sample_prices):
    close = sample_prices[["close_IXIC", "close_SPX"]].to_numpy()
    r = close[1:] / close[:-1] - 1
    preds = np.vstack([np.full((1, 2), np.nan), r[:-1]])  # yesterday's return
    strat = Strategy(Construction("sign"), CostModel.zero(), 1, PPY)
    unit = CostModel.zero().unit_cost(preds)
    gross, net, turnover, trading, borrow = strat.run(preds, r, unit)
    assert np.array_equal(gross, net) and trading.sum() == 0 and borrow.sum() == 0
    assert turnover.sum() > 100  # it did trade: daily rebalancing of a sign rule


def test_break_even_cost_zeroes_the_mean_net_return():
    rng = np.random.default_rng(5)
    preds = rng.normal(size=(2000, 4))
    r = 0.001 * preds + rng.normal(0, 0.01, preds.shape)  # a planted edge
    base = CostModel(1.0, 2.0, "fixed", 2.0, 0.0, 14, 30.0)
    g, n, tov, _, bor = Strategy(Construction("sign"), base, 5, PPY).run(
        preds, r, base.unit_cost(preds)
    )
    be = break_even_bps(g, bor, tov)
    assert 5.0 < be < 100.0  # the edge survives the default 5 bps, not 100
    at_be = CostModel(0.0, 0.0, "fixed", be, 0.0, 14, 30.0)
    g2, n2, *_ = Strategy(Construction("sign"), at_be, 5, PPY).run(preds, r, at_be.unit_cost(preds))
    # first order: the drifted turnover moves a little with the costs, so the mean net return
    # is near 0, small against the gross mean and the net mean at the default costs
    assert abs(np.mean(n2)) < 0.01 * np.mean(g2) and 0 < np.mean(n) < np.mean(g)
    more = CostModel(0.0, 0.0, "fixed", 2 * be, 0.0, 14, 30.0)
    n3 = Strategy(Construction("sign"), more, 5, PPY).run(preds, r, more.unit_cost(preds))[1]
    assert np.mean(n3) < 0


def test_volatility_slippage_uses_only_past_returns():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, (200, 3))
    past = np.vstack([np.full((1, 3), np.nan), r[:-1]])
    costs = CostModel(0.0, 0.0, "volatility", 2.0, 0.1, 10, 0.0)
    c = costs.unit_cost(past)
    # warm-up: the fixed slippage until 10 past returns are known
    assert np.all(c[:10] == 2.0 * BPS) and np.all(c[10:] != 2.0 * BPS)
    assert c[50, 1] == pytest.approx(0.1 * np.std(r[40:50, 1], ddof=1), rel=1e-12)
    changed = r.copy()
    changed[50:] *= 7  # the future changes; the cost at bar 50 cannot
    c2 = costs.unit_cost(np.vstack([np.full((1, 3), np.nan), changed[:-1]]))
    assert np.array_equal(c[:51], c2[:51])


def test_rolling_std_against_pandas():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 4))
    x[17, 2] = np.nan
    ours = rolling_std(x, 20)
    theirs = pd.DataFrame(x).rolling(20).std().to_numpy()
    assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_cost_model_refuses_bad_values():
    from quantcli.errors import InputError

    with pytest.raises(InputError, match="`commission_bps` must be a finite number >= 0"):
        CostModel(commission_bps=-1)
    with pytest.raises(InputError, match="`slippage` must be one of fixed, volatility, atr"):
        CostModel(slippage="vwap")
    with pytest.raises(InputError, match='slippage = "atr" needs high, low and close'):
        CostModel(slippage="atr").unit_cost(np.zeros((3, 2)))


def test_engine_reports_net_beside_gross(signal_frame):
    from quantcli.backtest import CombinatorialPurgedCV
    from quantcli.backtest.engine import run_cpcv_backtest
    from quantcli.models.estimators import LightGBMFactory

    kw = {
        "model_factory": LightGBMFactory({"n_estimators": 20, "num_leaves": 7}, seed=1),
        "cv": CombinatorialPurgedCV(n_groups=6, n_test_groups=2, embargo_pct=0.01),
    }
    net = run_cpcv_backtest(signal_frame, ["ret_1", "ret_5", "ret_20"], **kw)
    gross = run_cpcv_backtest(
        signal_frame, ["ret_1", "ret_5", "ret_20"], costs=CostModel.zero(), **kw
    )
    m, g = net.metrics, gross.metrics
    # the same predictions, so the same positions: equal gross returns on every rebalance bar;
    # in between the weights drift by the net equity, a second-order difference
    reb = np.arange(net.path_returns.shape[1]) % 5 == 0
    assert np.array_equal(net.gross_path_returns[:, reb], gross.path_returns[:, reb])
    assert np.allclose(net.gross_path_returns, gross.path_returns, rtol=1e-2, atol=1e-6)
    assert m["gross_sharpe"] == pytest.approx(g["sharpe"], rel=1e-2)
    assert m["sharpe"] < m["gross_sharpe"] and m["psr"] <= g["psr"]
    assert m["cost_drag_annual"] == pytest.approx(
        np.mean(net.gross_path_returns[m["gated_path"]] - net.path_returns[m["gated_path"]]) * 252
    )
    # with a frame carrying high/low/close the ATR slippage works; without them: a clear error
    from quantcli.errors import InputError

    with pytest.raises(InputError, match=r'slippage = "atr" needs column\(s\)'):
        run_cpcv_backtest(signal_frame, ["ret_1"], costs={"slippage": "atr"}, **kw)
    with pytest.raises(InputError, match="`horizon=3` bars disagrees with the label"):
        run_cpcv_backtest(signal_frame, ["ret_1"], horizon=3, **kw)
    assert isinstance(net.to_dict()["strategy"]["costs"], dict)
