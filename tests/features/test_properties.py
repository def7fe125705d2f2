"""Hypothesis properties of the feature engine and of the input hash."""

from __future__ import annotations

import io
import itertools

import numpy as np
import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from quantcli.data.synthetic import synthetic_universe
from quantcli.features import FeatureGenerator, compute_features
from quantcli.features.hashing import input_sha256

WARMUP = 199


def _bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_ipc(buf)
    return buf.getvalue()


universes = st.builds(
    lambda n, days, seed, ar1: synthetic_universe(n, days, seed=seed, ar1=ar1),
    st.integers(1, 3),
    st.integers(WARMUP + 1, WARMUP + 120),
    st.integers(0, 10_000),
    st.sampled_from([0.0, 0.2]),
)


@given(bars=universes)
def test_deterministic_same_input_same_bytes(bars):
    assert _bytes(compute_features(bars)) == _bytes(compute_features(bars.clone()))


@given(bars=universes, data=st.data())
def test_no_look_ahead_prefix_equals_full_history(bars, data):
    """Rows computed from a prefix of the history equal the same rows from the full history."""
    days = bars["ts"].unique().sort()
    cut = data.draw(st.integers(WARMUP, days.len() - 1), label="cut")
    prefix = bars.filter(pl.col("ts") <= days[cut])
    full = compute_features(bars).filter(pl.col("ts") <= days[cut])
    assert compute_features(prefix).equals(full)


@given(bars=universes, seed=st.integers(0, 2**32 - 1))
def test_row_and_symbol_order_do_not_matter(bars, seed):
    shuffled = bars.sample(fraction=1.0, shuffle=True, seed=seed)
    assert compute_features(shuffled).equals(compute_features(bars))


@given(bars=universes, other_seed=st.integers(0, 10_000))
def test_one_symbols_values_do_not_depend_on_other_symbols(bars, other_seed):
    target = bars.filter(pl.col("symbol") == "SYM0000")
    others = synthetic_universe(2, 300, seed=other_seed).with_columns(
        pl.concat_str(pl.lit("X"), pl.col("symbol")).alias("symbol")
    )
    alone = compute_features(target)
    mixed = compute_features(
        pl.concat([others, target, bars.filter(pl.col("symbol") != "SYM0000")])
    )
    assert mixed.filter(pl.col("symbol") == "SYM0000").equals(alone)


@given(bars=universes, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_input_hash_is_stable_and_changes_with_any_value(bars, seed, data):
    h = input_sha256(bars)
    assert input_sha256(bars.sample(fraction=1.0, shuffle=True, seed=seed)) == h
    row = data.draw(st.integers(0, bars.height - 1), label="row")
    col = data.draw(st.sampled_from(["ts", "high", "low", "close", "volume"]), label="col")
    if col == "ts":
        changed = bars.with_columns(
            pl.when(pl.int_range(pl.len()) == row)
            .then(pl.col("ts") + pl.duration(microseconds=1))
            .otherwise(pl.col("ts"))
            .alias("ts")
        )
    else:
        changed = bars.with_columns(
            pl.when(pl.int_range(pl.len()) == row)
            .then(pl.col(col) * (1 + 1e-12))
            .otherwise(pl.col(col))
            .alias(col)
        )
    assert input_sha256(changed) != h


@given(bars=universes)
def test_generator_metadata_hash_matches_and_seed_is_recorded(bars):
    result = FeatureGenerator(seed=7).compute_technical(bars)
    assert result.metadata["input_sha256"] == input_sha256(bars)
    assert result.metadata["seed"] == 7
    assert result.metadata["warmup_rows_dropped"] == bars.height - result.features.height
    assert result.features.equals(compute_features(bars))
    assert result.metadata["quality"]["non_finite"] == 0
    assert np.isfinite(result.features.drop("symbol", "ts").to_numpy()).all()


# --------------------------------------------------------------------------------------------
# Streaming: every registered kind continues from its state bit for bit.
# --------------------------------------------------------------------------------------------
def _random_bars(rng: np.random.Generator, n: int, flat: tuple[int, int], dry: tuple[int, int]):
    """OHLCV rows (open, high, low, close, volume) of one symbol: a random walk with a flat-price
    stretch (every price equal) and a zero-volume stretch."""
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.integers(1_000, 100_000, n).astype(np.float64)
    a, b = flat
    level = close[a] if a < n else 100.0
    for col in (open_, high, low, close):
        col[a:b] = level
    volume[dry[0] : dry[1]] = 0.0
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _params(kind, rng: np.random.Generator) -> dict:
    raw = {}
    for p in kind.params:
        if p.name in kind.inputs:  # a feature role: the kernel only sees the input row
            raw[p.name] = "input"
        elif p.type is int:
            lo = int(p.min if p.min is not None else 1)
            hi = int(p.max) if p.max is not None else lo + 25
            raw[p.name] = int(rng.integers(lo, hi + 1))
        elif p.default is not None:
            raw[p.name] = p.default
        else:
            lo = float(p.min if p.min is not None else 0.0)
            raw[p.name] = lo + float(rng.uniform(0.1, 3.0))
    return raw


def _kinds() -> list[str]:
    from quantcli.features.kinds import all_kinds

    return all_kinds()


@given(
    kind_name=st.sampled_from(_kinds()),
    n=st.integers(1, 160),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.floats(0, 1), min_size=1, max_size=4),
    flat=st.tuples(st.integers(0, 160), st.integers(0, 60)),
    dry=st.tuples(st.integers(0, 160), st.integers(0, 60)),
)
def test_continuing_from_state_is_bit_identical_for_every_kind(kind_name, n, seed, cuts, flat, dry):
    from quantcli.features.kinds import get_kind

    kind = get_kind(kind_name)
    rng = np.random.default_rng(seed)
    params = kind.check_params(_params(kind, rng), kind_name)
    if kind.scope == "cross_section":  # one value per timestamp from all symbols: no state
        assert kind.state_size(params) == 0
        return
    cols = _random_bars(rng, n, (flat[0], flat[0] + flat[1]), (dry[0], dry[0] + dry[1]))
    if kind.scope == "bars":
        x = np.stack([cols[c] for c in kind.inputs])
    else:  # a feature of features reads other features' values: any float rows will do
        x = np.stack([cols["close"] / 100.0 - 1.0 for _ in kind.inputs])
    pvec = kind.param_vector(params)
    rows = len(kind.outputs)
    whole_state = kind.init_state(params)
    assert whole_state.shape == (kind.state_size(params),)
    whole = np.empty((rows, n))
    kind.kernel(x, pvec, whole_state, whole)
    split_state = kind.init_state(params)
    split = np.empty((rows, n))
    edges = sorted({0, n, *(int(c * n) for c in cuts)})
    for a, b in itertools.pairwise(edges):
        kind.kernel(x[:, a:b], pvec, split_state, split[:, a:b])
    # bit for bit, NaN where the whole pass has NaN
    assert whole.tobytes() == split.tobytes(), (kind_name, params, edges)
    assert whole_state.tobytes() == split_state.tobytes(), (kind_name, params, edges)
