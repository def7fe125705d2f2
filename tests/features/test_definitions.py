"""The declaration loader, the table DDL against the declaration, and input errors."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest

from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import DataValidationError, InputError, NotFoundError
from quantcli.features import FeatureGenerator, compute_features, feature_names, load_feature_set
from quantcli.features.kinds import all_kinds

COLUMNS = [
    "nma_9", "nma_20", "nma_50", "nma_200", "bb_pct", "bb_width", "volume_z_20", "volume_z_50",
    "rsi_14", "rsi_21", "roc_10", "roc_20", "macd", "macd_signal", "macd_hist", "adx_14",
    "plus_di_14", "minus_di_14", "atr_14", "volatility_20", "volatility_50", "stoch_k", "stoch_d",
    "obv", "obv_ema", "return_1d", "return_5d", "return_10d", "return_20d",
]  # fmt: skip


def test_the_29_columns_in_declaration_order():
    fs = load_feature_set("technical_v1")
    assert feature_names() == COLUMNS
    assert (fs.table, fs.version, fs.family) == ("technical_features_v1", 1, "technical")
    assert [lab.name for lab in fs.labels] == ["fwd_return_5d", "fwd_return_1d"]
    assert fs.label("fwd_return_5d").horizon == 5


def test_every_declared_kind_is_registered_with_its_lookback():
    fs = load_feature_set("technical_v1")
    assert {f.kind for f in fs.features} <= set(all_kinds())
    assert {f.name: f.lookback for f in fs.features}["adx_14"] == 27
    assert fs.warmup == 199


def test_table_ddl_matches_the_declaration():
    con = duckdb.connect()
    con.execute(load_feature_set("technical_v1").table_ddl())
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'technical_features_v1' ORDER BY ordinal_position"
    ).fetchall()
    assert [r[0] for r in rows] == ["symbol", "ts", *COLUMNS]
    assert [r[1] for r in rows[2:]] == ["DOUBLE"] * 29
    assert rows[1][1] == "TIMESTAMP WITH TIME ZONE"


def test_unknown_feature_set_and_label_name_what_exists():
    with pytest.raises(NotFoundError, match="unknown feature set 'nope'") as exc:
        load_feature_set("nope")
    assert "technical_v1" in exc.value.hint
    with pytest.raises(NotFoundError, match="unknown label 'fwd_return_3d'") as exc:
        load_feature_set("technical_v1").label("fwd_return_3d")
    assert exc.value.hint == "known labels: fwd_return_5d, fwd_return_1d"


def _bars() -> pl.DataFrame:
    return synthetic_universe(2, 220, seed=3)


def test_missing_column_is_an_input_error_naming_it():
    with pytest.raises(InputError, match=r"missing column.*volume"):
        compute_features(_bars().drop("volume"))


def test_nan_price_is_an_input_error_naming_symbol_and_ts():
    bad = _bars().with_columns(
        pl.when(pl.int_range(pl.len()) == 230)
        .then(np.nan)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    with pytest.raises(InputError, match=r"column 'close' has a NaN.*symbol SYM0001"):
        compute_features(bad)


def test_duplicate_key_is_an_input_error():
    bars = _bars()
    with pytest.raises(InputError, match=r"duplicate key.*SYM0000"):
        compute_features(pl.concat([bars, bars.head(1)]))


def test_validation_errors_surface_from_compute_technical():
    """With validate=True the foundation's checks run first: exit code 2, row and column named."""
    bars = _bars().with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(-1.0).otherwise(pl.col("low")).alias("low")
    )
    with pytest.raises(DataValidationError, match=r"row 5.*low") as exc:
        FeatureGenerator(seed=42).compute_technical(bars, validate=True)
    assert exc.value.exit_code == 2
    assert any(i["check"] == "non_positive_price" for i in exc.value.issues)


def test_validation_warnings_are_returned_not_raised():
    bars = _bars().with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(0.0).otherwise(pl.col("volume")).alias("volume")
    )
    meta = FeatureGenerator(seed=1).compute_technical(bars, validate=True).metadata
    assert [(w["check"], w["count"]) for w in meta["validation_warnings"]] == [("zero_volume", 1)]


def test_generator_rejects_a_non_integer_seed():
    with pytest.raises(TypeError, match="`seed` must be an integer"):
        FeatureGenerator(seed="42")  # type: ignore[arg-type]
