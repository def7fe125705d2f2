"""The declaration compiled into lazy Polars expressions: the two engines agree, and the plan is
what it claims to be (LazyFrame.with_columns, one kernel call per indicator group)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import InputError
from quantcli.features import compute_features, feature_names, load_feature_set
from quantcli.features import expressions as ex
from quantcli.features.build import wave_size
from quantcli.features.compute import sort_bars
from tests.features._talib_oracle import talib_reference

FS = load_feature_set("technical_v1")
WARMUP = FS.warmup

# Kinds whose values cross or return to zero. Both engines round every operand to ~1e-16
# relative, but they sum windows in different orders, so a value near zero -- a difference of
# operands of the column's own magnitude (close / SMA - 1, EMA_fast - EMA_slow, (C - lower) /
# width, a return, (V - SMA) / sd), or a running-sum SMA of %K back at 0 after a flat stretch
# (TA-Lib's own running sum leaves 3.6e-14 there) -- carries an absolute error of ~1e-15 of
# that magnitude, not of itself. The floor is 1e-10 of the column's largest |value| (measured
# worst case: 6.9e-13 on bb_pct, largest |value| 1.4; 6.0e-14 on stoch_d, largest 98), far
# below any value a model could act on.
ZERO_CROSSING = {
    "nma", "bb_pct", "volume_z", "roc", "macd", "macd_signal", "macd_hist", "return",
    "stoch_k", "stoch_d",
}  # fmt: skip
RTOL = 1e-9


def _assert_close(got: pl.DataFrame, expected: dict[str, np.ndarray], label: str) -> None:
    for spec in FS.features:
        want = expected[spec.name]
        have = got[spec.name].to_numpy()
        assert np.isfinite(have).all(), f"{label}: {spec.name} has a null, NaN or inf"
        atol = 1e-10 * float(np.abs(want).max()) if spec.kind in ZERO_CROSSING else 0.0
        np.testing.assert_allclose(have, want, rtol=RTOL, atol=atol, err_msg=f"{label}.{spec.name}")


def _assert_engines_agree(bars: pl.DataFrame, label: str) -> None:
    kernel = compute_features(bars, engine="kernel")
    native = compute_features(bars, engine="polars")
    assert native.select("symbol", "ts").equals(kernel.select("symbol", "ts")), label
    assert native.columns == kernel.columns == ["symbol", "ts", *feature_names()]
    assert native.dtypes[2:] == [pl.Float64] * len(FS.features)
    _assert_close(native, {n: kernel[n].to_numpy() for n in feature_names()}, label)


def _flat_and_dry(bars: pl.DataFrame) -> pl.DataFrame:
    """SYM0000 flat over its first 230 bars (through the warm-up: seeds of 0 changes, HH == LL,
    zero variance, undefined DX); SYM0001 flat over bars 250-400 with zero volume over bars
    300-360; SYM0002 untouched."""
    bar = pl.int_range(pl.len()).over("symbol")
    sym = pl.col("symbol")
    flat = ((sym == "SYM0000") & (bar < 230)) | ((sym == "SYM0001") & bar.is_between(250, 400))
    level = pl.col("close").filter(bar == 250).first().over("symbol")
    dry = (sym == "SYM0001") & bar.is_between(300, 360)
    prices = ("open", "high", "low", "close")
    return bars.with_columns(
        *(pl.when(flat).then(level).otherwise(pl.col(c)).alias(c) for c in prices),
        pl.when(dry).then(0.0).otherwise(pl.col("volume")).alias("volume"),
    )


@pytest.fixture(scope="module")
def sample_bars() -> pl.DataFrame:
    from quantcli.data import load_sample

    return load_sample()


def test_polars_engine_equals_kernel_engine_on_the_real_sample(sample_bars):
    _assert_engines_agree(sample_bars, "sample")


def test_polars_engine_equals_kernel_engine_on_flat_prices_and_zero_volume():
    bars = _flat_and_dry(synthetic_universe(3, 700, seed=21, ar1=0.1))
    # the stretches are really there: a flat run of close and a run of zero volume
    sym1 = bars.filter(pl.col("symbol") == "SYM0001")
    assert sym1["close"][250:401].n_unique() == 1 and sym1["high"][250:401].n_unique() == 1
    assert (sym1["volume"][300:361] == 0.0).all()
    _assert_engines_agree(bars, "flat/dry")
    out = compute_features(bars, engine="polars").filter(pl.col("symbol") == "SYM0001")
    # bar 400 is row 400 - WARMUP, flat for 150 bars: TA-Lib's zero conventions, never NaN
    row = out.row(400 - WARMUP, named=True)
    for name in ("roc_10", "return_5d", "volatility_20", "bb_width", "bb_pct"):
        assert row[name] == 0.0, name
    assert abs(row["stoch_k"]) < 1e-12  # HH == LL gives %K = 0 (a running sum's residue)
    # bar 360: 50 bars of zero volume, so its SMA and standard deviation are 0
    row = out.row(360 - WARMUP, named=True)
    assert row["volume_z_20"] == row["volume_z_50"] == 0.0


def test_engines_agree_when_a_symbol_is_shorter_than_a_window():
    """A 3-bar symbol between two long ones: no rows for it, and its bars do not leak into its
    neighbours' windows (the polars engine masks windows at symbol boundaries)."""
    bars = synthetic_universe(3, 260, seed=5)
    short = pl.concat(
        [
            bars.filter(pl.col("symbol") != "SYM0001"),
            bars.filter(pl.col("symbol") == "SYM0001").head(3),
        ]
    )
    _assert_engines_agree(short, "short symbol")
    out = compute_features(short, engine="polars")
    assert out["symbol"].unique().sort().to_list() == ["SYM0000", "SYM0002"]
    alone = compute_features(bars.filter(pl.col("symbol") == "SYM0002"), engine="polars")
    assert out.filter(pl.col("symbol") == "SYM0002").equals(alone)


def test_polars_engine_equals_talib_on_the_real_sample(sample_bars):
    native = compute_features(sample_bars, engine="polars")
    for symbol, cols in talib_reference(sample_bars).items():
        mine = native.filter(pl.col("symbol") == symbol)
        _assert_close(mine, {n: cols[n][WARMUP:] for n in feature_names()}, f"talib {symbol}")


@given(
    seed=st.integers(0, 10_000),
    n_days=st.integers(WARMUP + 1, WARMUP + 150),
    ar1=st.sampled_from([0.0, 0.3]),
    flat=st.booleans(),
)
def test_engines_agree_on_random_bars(seed, n_days, ar1, flat):
    bars = synthetic_universe(2, n_days, seed=seed, ar1=ar1)
    if flat:
        # a flat run of random length and place in SYM0001
        rng = np.random.default_rng(seed)
        a = int(rng.integers(0, n_days - 1))
        b = int(rng.integers(a, n_days))
        bar = pl.int_range(pl.len()).over("symbol")
        mask = (pl.col("symbol") == "SYM0001") & bar.is_between(a, b)
        level = pl.col("close").filter(bar == a).first().over("symbol")
        bars = bars.with_columns(
            pl.when(mask).then(level).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        )
    _assert_engines_agree(bars, f"seed {seed}")


def test_each_kernel_group_runs_once_per_evaluation(monkeypatch):
    from quantcli.features import engine

    calls: list[int] = []
    real = engine.KernelPlan.run

    def counting(self, *args, **kwargs):
        calls.append(len(self.groups))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.KernelPlan, "run", counting)
    groups = engine.KernelPlan.of(FS).groups
    members = {g.name + str(g.params): list(g.members) for g in groups}
    assert members["macd(12.0, 26.0, 9.0)"] == ["macd", "macd_signal", "macd_hist"]
    assert members["directional(14.0,)"] == ["adx_14", "plus_di_14", "minus_di_14"]
    assert members["stoch(14.0, 3.0, 3.0)"] == ["stoch_k", "stoch_d"]
    assert members["bbands(20.0, 2.0)"] == ["bb_pct", "bb_width"]
    assert len(groups) == 23  # 29 features, 6 of them riding on another's kernel call
    compute_features(synthetic_universe(2, 300, seed=4))
    assert calls == [23]  # one engine run per evaluation, every group in it


def _plan(engine: str) -> str:
    srt = sort_bars(synthetic_universe(2, 260, seed=2))
    return ex.lazy_features(srt, FS, engine).explain()


def test_polars_engine_plan_is_native_with_columns_naming_every_feature():
    plan = _plan("polars")
    assert "python_udf" not in plan  # no Python function anywhere
    assert plan.count("WITH_COLUMNS") >= 2  # staged: intermediates, then the features
    for name in feature_names():
        assert f'.alias("{name}")' in plan, name
    assert 'col("__bar")) >= (dyn int: 199)' in plan or "FILTER" in plan


def test_kernel_engine_plan_is_one_udf_after_a_lazy_warmup_filter():
    plan = _plan("kernel")
    assert plan.count("python_udf()") == 1
    assert "FILTER" in plan and "199" in plan


def test_both_engines_know_every_declared_kind():
    from quantcli.features.kinds import get_kind

    for spec in load_feature_set("technical_v1").features:
        assert callable(get_kind(spec.kind).kernel)
        assert callable(get_kind(spec.kind).polars)


def test_unknown_engine_is_refused_with_the_choices():
    with pytest.raises(
        InputError, match=r"`engine` must be one of kernel, polars, got `engine='numpy'`"
    ):
        compute_features(synthetic_universe(1, 250, seed=0), engine="numpy")


def test_wave_size_follows_the_executor_and_is_bounded_by_memory():
    assert wave_size(workers=1, shard_rows=250_000, n_features=29) == 2
    assert wave_size(workers=8, shard_rows=250_000, n_features=29) == 16
    # 2 GB / (250 k bars x 38 columns x 8 bytes) = 28 shards at most, however many workers
    assert wave_size(workers=64, shard_rows=250_000, n_features=29) == 28
    assert wave_size(workers=4, shard_rows=50_000_000, n_features=29) == 1
    with pytest.raises(InputError, match="`workers` must be at least 1, got `workers=0`"):
        wave_size(workers=0, shard_rows=1, n_features=1)
