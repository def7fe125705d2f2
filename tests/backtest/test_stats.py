"""Statistics against published oracle values (mlfinlab tests), scipy, and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from quantcli.backtest import stats
from quantcli.backtest.gates import BacktestValidator
from quantcli.backtest.pbo import probability_of_backtest_overfitting
from quantcli.errors import InputError


def test_psr_and_dsr_public_oracles():
    assert stats.probabilistic_sharpe_ratio(1.14, 1.0, 250, 0.0, 3.0) == pytest.approx(
        0.95727, abs=1e-5
    )
    assert stats.deflated_sharpe_ratio(1.14, [3.5, 1.01, 1.02], 250, 0.0, 3.0) == pytest.approx(
        0.95836, abs=1e-5
    )
    assert stats.expected_max_sharpe([1.0]) == 0.0


def test_sharpe_closed_form():
    # alternating a+b, a-b: mean a, sample std b*sqrt(2n/(2n-1))
    a, b, n = 0.001, 0.01, 126
    r = np.tile([a + b, a - b], n)
    per_period = a / (b * math.sqrt(2 * n / (2 * n - 1)))
    assert stats.sharpe_ratio(r, periods_per_year=None) == pytest.approx(per_period, rel=1e-12)
    assert stats.sharpe_ratio(r) == pytest.approx(per_period * math.sqrt(252), rel=1e-12)
    assert stats.sharpe_ratio(r, rf=a, periods_per_year=None) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(stats.sharpe_ratio(np.full(10, 0.01)))
    assert math.isnan(stats.sharpe_ratio([0.01]))


def test_psr_on_normal_returns_matches_scipy():
    r = np.random.default_rng(3).normal(0.0008, 0.01, 1000)
    sr = r.mean() / r.std(ddof=1)
    g3 = sps.skew(r, bias=True)
    g4 = sps.kurtosis(r, fisher=False, bias=True)
    assert stats.moments(r) == pytest.approx((g3, g4), rel=1e-10)
    expected = sps.norm.cdf(sr * math.sqrt(999) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert stats.psr(r) == pytest.approx(expected, rel=1e-12)
    # for normal returns g4 is close to 3 and the PSR to the Gaussian one
    gaussian = sps.norm.cdf(sr * math.sqrt(999) / math.sqrt(1 + sr**2 / 2))
    assert stats.psr(r) == pytest.approx(gaussian, abs=5e-3)


@pytest.mark.parametrize(("sr", "bench", "g3", "g4"), [(0.1, 0.0, 0.0, 3.0), (0.08, 0.02, -1, 6)])
def test_min_track_record_length_inverts_psr(sr, bench, g3, g4):
    t = stats.min_track_record_length(sr, bench, g3, g4, prob=0.95)
    assert stats.probabilistic_sharpe_ratio(sr, bench, t, g3, g4) == pytest.approx(0.95, abs=1e-9)
    # closed form for the normal case: 1 + (1 + SR^2/2) (1.6449 / SR)^2
    if g3 == 0.0:
        assert t == pytest.approx(1 + (1 + sr**2 / 2) * (1.6448536269514722 / sr) ** 2)
    assert stats.min_track_record_length(0.0, 0.1) == math.inf


@pytest.mark.parametrize(
    ("returns", "expected"),
    [
        ([0.1, -0.5, 0.2], -0.5),
        ([-0.1, 0.05], -0.1),  # a loss in the first period counts
        ([0.01] * 5, 0.0),
        ([0.5, -0.2, -0.25, 1.0], -0.4),
    ],
)
def test_max_drawdown_known_sequences(returns, expected):
    assert stats.max_drawdown(returns) == pytest.approx(expected, abs=1e-12)


def test_win_rate_and_annual_return():
    assert stats.win_rate([0.1, 0.0, -0.1, 0.2]) == 0.5
    r = np.full(252, 1.1 ** (1 / 252) - 1)
    assert stats.annual_return(r) == pytest.approx(0.1, rel=1e-12)
    assert stats.annual_return(np.full(504, 1.1 ** (1 / 252) - 1)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="non-finite"):
        stats.sharpe_ratio([0.1, float("nan")])


def test_pbo_extremes_and_logits():
    good = np.array([0.02, 0.01, 0.03, 0.015])  # varied so the Sharpe ratio is finite
    bad = -good
    # config 0 wins in block A, config 1 in block B: the IS winner is always the OOS loser
    anti = np.column_stack([np.r_[good, bad], np.r_[bad, good]])
    res = probability_of_backtest_overfitting(anti, n_blocks=2)
    assert res.pbo == 1.0
    assert res.logits == pytest.approx([math.log(1 / 2)] * 2)  # rank 1 of 2: w = 1/3
    persistent = np.column_stack([np.r_[good, good], np.r_[bad, bad]])
    res = probability_of_backtest_overfitting(persistent, n_blocks=2)
    assert res.pbo == 0.0 and res.logits == pytest.approx([math.log(2)] * 2)


def test_pbo_noise_is_near_one_half_and_signal_is_low():
    rng = np.random.default_rng(11)
    noise = rng.normal(0, 0.01, (800, 10))
    assert 0.3 <= probability_of_backtest_overfitting(noise, n_blocks=8).pbo <= 0.7
    skill = noise.copy()
    skill[:, 3] += 0.004
    assert probability_of_backtest_overfitting(skill, n_blocks=8).pbo < 0.05


def test_pbo_guards():
    with pytest.raises(InputError, match="at least 2 configurations"):
        probability_of_backtest_overfitting(np.zeros((100, 1)))
    with pytest.raises(InputError, match="`n_blocks` must be even"):
        probability_of_backtest_overfitting(np.zeros((100, 3)), n_blocks=5)
    with pytest.raises(InputError, match="needs at least 32 periods"):
        probability_of_backtest_overfitting(np.zeros((20, 3)), n_blocks=16)


def test_validator_passes_and_fails_with_reasons():
    rng = np.random.default_rng(5)
    strong = rng.normal(0.002, 0.01, 500)  # annualized Sharpe ~ 3
    passed, m = BacktestValidator().validate_model(strong)
    assert passed and m["reasons"] == [] and m["sharpe"] > 1.2 and m["psr"] > 0.95
    losing = rng.normal(-0.002, 0.02, 500)
    passed, m = BacktestValidator().validate_model(losing)
    assert not passed
    assert [r.split()[0] for r in m["reasons"]] == ["Sharpe", "PSR", "max"]
    assert m["thresholds"] == {"min_sharpe": 1.2, "min_psr": 0.95, "max_drawdown": -0.2}
    lenient = BacktestValidator.from_config({}, min_sharpe=-10.0, min_psr=0.0, max_drawdown=-1.0)
    assert lenient.validate_model(losing)[0]
    with pytest.raises(InputError, match="`max_drawdown` must be a negative fraction"):
        BacktestValidator(max_drawdown=0.2)


def test_pbo_vectorized_equals_naive_loop():
    import itertools

    rng = np.random.default_rng(2)
    m = rng.normal(0, 0.01, (96, 5)) + rng.normal(0, 0.001, 5)
    s, n = 8, 5
    blocks = m.reshape(s, 12, n)
    naive = []
    for chosen in itertools.combinations(range(s), s // 2):
        mask = np.isin(np.arange(s), chosen)
        ins, oos = blocks[mask].reshape(-1, n), blocks[~mask].reshape(-1, n)
        is_sr = ins.mean(0) / ins.std(0, ddof=1)
        oos_sr = oos.mean(0) / oos.std(0, ddof=1)
        rank = sps.rankdata(oos_sr)[int(np.argmax(is_sr))]
        naive.append(math.log(rank / (n + 1) / (1 - rank / (n + 1))))
    res = probability_of_backtest_overfitting(m, n_blocks=s)
    assert res.logits == pytest.approx(naive, rel=1e-9)
    assert res.pbo == np.mean(np.array(naive) <= 0)
