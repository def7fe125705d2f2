"""Hypothesis properties of the feature engine and of the input hash."""

from __future__ import annotations

import io

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
