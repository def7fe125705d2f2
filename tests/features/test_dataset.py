"""load_training_frame: features joined with the declared label, in (ts, symbol) order."""

from __future__ import annotations

import polars as pl
import pytest

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import NotFoundError
from quantcli.features import feature_names
from quantcli.features.build import build_features
from quantcli.features.dataset import load_training_frame


@pytest.fixture
def built(qcli_home) -> pl.DataFrame:
    bars = synthetic_universe(3, 320, seed=4)
    ingest_frame(bars)
    build_features()
    return bars


def test_columns_order_and_label_values(built):
    frame = load_training_frame()
    assert frame.columns == ["symbol", "ts", *feature_names(), "label", "label_end"]
    assert frame.equals(frame.sort("ts", "symbol"))
    assert frame["ts"].n_unique() < frame.height  # several symbols share each timestamp
    # 3 symbols x (320 bars - 199 warm-up - 5 bars without a 5-bar forward return)
    assert frame.height == 3 * (320 - 199 - 5)
    assert frame["label"].null_count() == 0
    closes = built.sort("symbol", "ts").with_columns(
        (pl.col("close").shift(-5).over("symbol") / pl.col("close") - 1).alias("want"),
        pl.col("ts").shift(-5).over("symbol").alias("want_end"),
    )
    joined = frame.join(closes, on=["symbol", "ts"])
    assert (joined["label"] == joined["want"]).all()
    assert (joined["label_end"] == joined["want_end"]).all()
    assert (joined["label_end"] > joined["ts"]).all()


def test_filters_keep_labels_that_end_after_until(built):
    days = built["ts"].unique().sort()
    since, until = days[250], days[300]
    frame = load_training_frame(
        symbols=["SYM0001"], since=since, until=until, label="fwd_return_1d"
    )
    assert frame["symbol"].unique().to_list() == ["SYM0001"]
    assert frame["ts"].min() == since and frame["ts"].max() == until
    assert frame["label_end"].max() == days[301]  # the label of `until` ends one bar later


def test_unknown_label_and_missing_table(qcli_home):
    ingest_frame(synthetic_universe(1, 250, seed=1))
    with pytest.raises(NotFoundError, match="technical_features_v1") as exc:
        load_training_frame()
    assert "qcli features build" in exc.value.hint
    build_features()
    with pytest.raises(NotFoundError, match="unknown label 'fwd_return_2d'"):
        load_training_frame(label="fwd_return_2d")
