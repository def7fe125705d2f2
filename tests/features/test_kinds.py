"""The kinds added beside technical_v1's: TA-Lib parity (bit for bit unless documented), the
state contract (a split run continued from the state equals one run, to the bit), the Polars
twins against the kernels, and the transforms and cross-sectional kinds against NumPy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcli.data.synthetic import synthetic_universe
from quantcli.features.compute import sort_bars
from quantcli.features.definitions import parse_feature_set
from quantcli.features.expressions import lazy_features
from quantcli.features.kinds import all_kinds, get_kind
from tests.features._kinds_runner import kernel_frame, run_kernel

#: Each TA-Lib kind with the params it is tested with (two sets where the window matters).
TALIB_KINDS: dict[str, list[dict]] = {
    "ema": [{"window": 10}, {"window": 2}],
    "wma": [{"window": 10}, {"window": 2}],
    "dema": [{"window": 10}],
    "tema": [{"window": 7}],
    "trix": [{"window": 9}],
    "kama": [{"window": 10}, {"window": 3}],
    "sar": [{}, {"acceleration": 0.05, "maximum": 0.3}],
    "linearreg_slope": [{"window": 14}],
    "cci": [{"window": 14}, {"window": 5}],
    "mfi": [{"window": 14}],
    "willr": [{"window": 14}],
    "aroon_up": [{"window": 14}],
    "aroon_down": [{"window": 14}],
    "aroonosc": [{"window": 25}],
    "mom": [{"window": 10}],
    "cmo": [{"window": 14}],
    "ppo": [{}, {"fast": 5, "slow": 20, "matype": 0}],
    "ultosc": [{}, {"window1": 5, "window2": 10, "window3": 20}],
    "natr": [{"window": 14}],
    "bop": [{}],
    "stochrsi_k": [{}],
    "stochrsi_d": [{}],
    "ad": [{}],
    "adosc": [{}, {"fast": 5, "slow": 12}],
}
#: Kinds whose TA-Lib arithmetic is not reproduced to the bit (docs/features.md says why):
#: compared with rtol 1e-9 and an absolute floor of 1e-10 of the column's largest |value|.
NOT_BITWISE = {"wma", "linearreg_slope", "mfi"}
CASES = [(k, p) for k, ps in TALIB_KINDS.items() for p in ps]


def _at_the_minimum() -> list[tuple[str, dict]]:
    """Every TA-Lib kind with each int param at its declared minimum (the others at their
    default, or 5): a minimum below TA-Lib's would compute a value TA-Lib refuses to define."""
    cases = []
    for name in all_kinds():
        kind = get_kind(name)
        if kind.talib is None or kind.scope != "bars":
            continue
        base = {p.name: p.default if p.default is not None else 5 for p in kind.params}
        for p in kind.params:
            if p.type is int and p.min is not None:
                cases.append((name, {**base, p.name: int(p.min)}))
    return cases


#: Deviations the minima show, not fixed yet (strict xfail: each must still fail, so a fix is
#: noticed): two-bar Wilder systems on flat stretches, and the two-bar rolled sums.
KNOWN_AT_MINIMUM = {
    ("bb_pct", 2): "TA-Lib's two-bar band has no value on the flat stretch",
    ("volume_z", 2): "TA-Lib's two-bar deviation has no value on the dry stretch",
    ("adx", 2): "two-bar directional system differs on flat stretches",
    ("plus_di", 2): "two-bar directional system differs on flat stretches",
    ("minus_di", 2): "two-bar directional system differs on flat stretches",
    ("cmo", 2): "two-bar CMO differs on flat stretches",
    ("linearreg_slope", 2): "two-bar slopes near zero exceed the documented tolerance",
}


def _case(name: str, raw: dict):
    reason = KNOWN_AT_MINIMUM.get((name, raw.get("window")))
    if reason is None or (name, raw) in CASES:
        return pytest.param(name, raw, id=f"{name}-{raw}")
    return pytest.param(name, raw, id=f"{name}-{raw}", marks=pytest.mark.xfail(reason=reason))


CASES_AND_MINIMA = [_case(k, p) for k, p in CASES] + [
    _case(k, p) for k, p in _at_the_minimum() if (k, p) not in CASES
]


def _flat_and_dry(bars: pl.DataFrame) -> pl.DataFrame:
    """SYM0000 flat over bars 0-80 (through every warm-up), SYM0001 flat over bars 150-260
    with zero volume over bars 200-300; SYM0002 untouched."""
    bar = pl.int_range(pl.len()).over("symbol")
    sym = pl.col("symbol")
    flat = ((sym == "SYM0000") & (bar < 80)) | ((sym == "SYM0001") & bar.is_between(150, 260))
    level = pl.col("close").filter(bar == 150).first().over("symbol")
    dry = (sym == "SYM0001") & bar.is_between(200, 300)
    return bars.with_columns(
        *(
            pl.when(flat).then(level).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        ),
        pl.when(dry).then(0.0).otherwise(pl.col("volume")).alias("volume"),
    )


@pytest.fixture(scope="module")
def datasets() -> dict[str, pl.DataFrame]:
    from quantcli.data import load_sample

    return {
        "sample": sort_bars(load_sample()),
        "flat_dry": sort_bars(_flat_and_dry(synthetic_universe(3, 420, seed=5))),
    }


def _symbols(bars: pl.DataFrame):
    for (_sym,), g in bars.group_by("symbol", maintain_order=True):
        yield {
            c: g[c].to_numpy().astype(np.float64)
            for c in ("open", "high", "low", "close", "volume")
        }


@pytest.mark.parametrize(("name", "raw"), CASES_AND_MINIMA)
def test_kind_equals_talib(datasets, name, raw):
    kind = get_kind(name)
    params = kind.check_params(raw, "test")
    lookback = kind.lookback(params)
    for label, bars in datasets.items():
        for cols in _symbols(bars):
            want = kind.talib(cols, params)
            got = run_kernel(kind, params, np.vstack([cols[c] for c in kind.inputs]))
            # the declared lookback is TA-Lib's: NaN exactly before it, defined from it on
            assert np.isnan(got[:lookback]).all() and np.isfinite(got[lookback:]).all()
            assert np.isnan(want[:lookback]).all() and np.isfinite(want[lookback:]).all()
            if name in NOT_BITWISE:
                atol = 1e-10 * float(np.abs(want[lookback:]).max())
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=atol, err_msg=label)
            else:
                np.testing.assert_array_equal(got, want, err_msg=f"{label}: {name} {raw}")


@pytest.mark.parametrize(
    ("name", "raw"), CASES, ids=[f"{k}-{i}" for k, i in ((k, str(p)) for k, p in CASES)]
)
@given(cut=st.floats(0.0, 1.0), seed=st.integers(0, 3))
def test_kernel_continued_from_its_state_is_bit_identical(name, raw, cut, seed):
    kind = get_kind(name)
    params = kind.check_params(raw, "test")
    bars = sort_bars(_flat_and_dry(synthetic_universe(2, 160, seed=seed)))
    for cols in _symbols(bars):
        x = np.vstack([cols[c] for c in kind.inputs])
        split = int(cut * x.shape[1])
        whole = run_kernel(kind, params, x)
        np.testing.assert_array_equal(run_kernel(kind, params, x, split=split), whole)


USER_SET = (
    """
[feature_set]
name = "desk_all"
version = 1
table = "desk_all_features_v1"
description = "every new kind"
"""
    + "".join(
        f'\n[[features]]\nname = "{k}_{i}"\nkind = "{k}"\nparams = {{ '
        + ", ".join(f"{a} = {b!r}" for a, b in p.items())
        + ' }\ndescription = "x"\n'
        for k, ps in TALIB_KINDS.items()
        for i, p in enumerate(ps)
    )
    + """
[[features]]
name = "cmo_lag_3"
kind = "lag"
params = { of = "cmo_0", periods = 3 }
description = "lag"

[[features]]
name = "ema_over_kama"
kind = "ratio"
params = { of = "ema_0", other = "kama_0" }
description = "ratio"

[[features]]
name = "ema_minus_wma"
kind = "difference"
params = { of = "ema_0", other = "wma_0" }
description = "difference"

[[features]]
name = "mfi_z_20"
kind = "zscore"
params = { of = "mfi_0", window = 20 }
description = "z"

[[features]]
name = "cci_rank"
kind = "cs_rank"
params = { of = "cci_0" }
description = "rank"

[[features]]
name = "cci_cs_z"
kind = "cs_zscore"
params = { of = "cci_0" }
description = "cross-sectional z"
"""
)


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    path = tmp_path_factory.mktemp("defs") / "desk_all_v1.toml"
    path.write_text(USER_SET)
    return parse_feature_set(path)


@pytest.mark.parametrize("label", ["sample", "flat_dry"])
def test_polars_twins_agree_with_the_kernels(datasets, every_kind, label):
    bars = datasets[label]
    kernel = kernel_frame(bars, every_kind)
    native = lazy_features(bars, every_kind, engine="polars").collect()
    assert native.select("symbol", "ts").equals(kernel.select("symbol", "ts"))
    for name in every_kind.feature_names:
        want, have = kernel[name].to_numpy(), native[name].to_numpy()
        assert np.isfinite(have).all(), f"{label}: {name} has a null or NaN"
        # a value crossing zero carries the rounding of its operands' magnitude, not its own
        atol = 1e-10 * float(np.abs(want).max())
        np.testing.assert_allclose(have, want, rtol=1e-9, atol=atol, err_msg=f"{label}.{name}")


def test_transforms_equal_their_definitions(datasets, every_kind):
    bars = datasets["sample"]
    frame = kernel_frame(bars, every_kind, warmup=False)
    for sym in ("SPX", "IXIC"):
        f = frame.filter(pl.col("symbol") == sym)
        cmo, ema, kama, wma, mfi = (
            f[c].to_numpy() for c in ("cmo_0", "ema_0", "kama_0", "wma_0", "mfi_0")
        )
        np.testing.assert_array_equal(f["cmo_lag_3"].to_numpy()[3:], cmo[:-3])
        assert np.isnan(f["cmo_lag_3"].to_numpy()[:17]).all()  # CMO's 14 + 3
        np.testing.assert_array_equal(f["ema_over_kama"].to_numpy()[10:], (ema / kama)[10:])
        np.testing.assert_array_equal(f["ema_minus_wma"].to_numpy(), ema - wma)
        z = f["mfi_z_20"].to_numpy()
        t = 500
        window = mfi[t - 19 : t + 1]
        assert z[t] == pytest.approx((mfi[t] - window.mean()) / window.std(), rel=1e-12)
        assert np.isnan(z[: 14 + 19]).all() and np.isfinite(z[14 + 19 :]).all()


def test_cross_sectional_rank_and_zscore_at_each_timestamp(datasets, every_kind):
    frame = kernel_frame(datasets["flat_dry"], every_kind)
    for (_ts,), g in frame.group_by("ts"):
        x = g["cci_0"].to_numpy()
        order = np.argsort(np.argsort(x, kind="stable"), kind="stable")
        if len(x) > 1 and len(set(x.tolist())) == len(x):
            np.testing.assert_allclose(g["cci_rank"].to_numpy(), order / (len(x) - 1))
        std = x.std()
        want = np.zeros_like(x) if std < 1e-8 or len(x) == 1 else (x - x.mean()) / std
        np.testing.assert_allclose(g["cci_cs_z"].to_numpy(), want, rtol=1e-12, atol=1e-12)
    one = frame.group_by("ts").len().filter(pl.col("len") == 3)
    assert one.height > 300  # the three symbols overlap: the check above saw real cross-sections


TRANSFORMS = [
    ("lag", {"of": "a", "periods": 3}),
    ("ratio", {"of": "a", "other": "b"}),
    ("difference", {"of": "a", "other": "b"}),
    ("zscore", {"of": "a", "window": 20}),
]


@pytest.mark.parametrize(("name", "raw"), TRANSFORMS, ids=[t[0] for t in TRANSFORMS])
@given(cut=st.floats(0.0, 1.0), seed=st.integers(0, 3))
def test_transform_continued_from_its_state_is_bit_identical(name, raw, cut, seed):
    kind = get_kind(name)
    params = kind.check_params(raw, "test")
    bars = sort_bars(_flat_and_dry(synthetic_universe(1, 160, seed=seed)))
    a = bars["close"].to_numpy().copy()
    a[:14] = np.nan  # an input feature's warm-up
    b = np.where(bars["volume"].to_numpy() > 0, bars["open"].to_numpy(), 0.0)  # zeros: ratio 0
    x = np.vstack([a, b][: len(kind.inputs)])
    whole = run_kernel(kind, params, x)
    np.testing.assert_array_equal(run_kernel(kind, params, x, split=int(cut * 160)), whole)
    want = kind.talib({"of": x[0], "other": x[-1]}, params)  # the NumPy definition
    np.testing.assert_allclose(whole, want, rtol=1e-12, atol=1e-12)
