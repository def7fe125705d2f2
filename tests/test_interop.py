"""pandas and pyarrow inputs: one boundary (quantcli._interop), the same results as polars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcli._interop import to_polars
from quantcli.errors import InputError


def _bars() -> pl.DataFrame:
    from quantcli.data.synthetic import synthetic_universe

    return synthetic_universe(2, 260, seed=4)


def test_pandas_index_levels_become_columns_and_a_range_index_is_dropped():
    ts = pd.date_range("2020-01-01", periods=3, tz="UTC")
    pdf = pd.DataFrame({"symbol": ["A"] * 3, "ts": ts, "x": [1.0, 2.0, 3.0]})
    assert to_polars(pdf).columns == ["symbol", "ts", "x"]
    assert to_polars(pdf.set_index(["symbol", "ts"])).equals(to_polars(pdf))
    by_time = to_polars(pdf.set_index("ts")[["x"]].rename_axis(None))  # unnamed DatetimeIndex
    assert by_time.columns == ["ts", "x"] and by_time["ts"].dtype.time_zone == "UTC"
    # an unnamed, non-default index is row labels, not data
    assert to_polars(pdf.set_index(pd.Index([7, 8, 9]))).columns == ["symbol", "ts", "x"]


def test_pyarrow_tables_and_batches():
    frame = pl.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert to_polars(frame.to_arrow()).equals(frame)
    assert to_polars(frame.to_arrow().to_batches()[0]).equals(frame)
    assert to_polars(frame.lazy()).equals(frame)
    assert to_polars(frame) is frame


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1]}, "must be a polars, pandas or pyarrow table, got dict"),
        (np.zeros((2, 2)), "got ndarray"),
        (pa.array([1, 2]), "must be a table, got pyarrow"),
    ],
)
def test_other_types_are_refused_naming_the_argument(value, message):
    with pytest.raises(InputError, match=message) as exc:
        to_polars(value, "entity_df")
    assert "`entity_df`" in str(exc.value)


def test_ambiguous_pandas_frames_are_refused():
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(InputError, match="column 'a' twice"):
        to_polars(dup)
    clash = pd.DataFrame({"ts": [1]}, index=pd.Index([5], name="ts"))
    with pytest.raises(InputError, match="'ts' both as an index level and as a column"):
        to_polars(clash)


@pytest.mark.parametrize("kind", ["pandas", "pyarrow"])
def test_bars_functions_give_the_polars_result(kind):
    from quantcli import compute_features, validate_bars

    bars = _bars()
    other = bars.to_pandas() if kind == "pandas" else bars.to_arrow()
    assert compute_features(other).equals(compute_features(bars))
    assert validate_bars(other).to_dict() == validate_bars(bars).to_dict()


def test_ingest_frame_takes_pandas(qcli_home):
    from quantcli import ingest_frame
    from quantcli.store.offline import OfflineStore

    bars = _bars()
    result = ingest_frame(bars.to_pandas(), source="pandas")
    assert result.rows_inserted == bars.height
    again = ingest_frame(bars.to_arrow(), source="arrow")  # the same bars: nothing changes
    assert (again.rows_inserted, again.rows_unchanged) == (0, bars.height)
    with OfflineStore(read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM bars").fetchone()[0] == bars.height


def test_drift_detector_takes_pandas_and_pyarrow():
    from quantcli import DriftDetector

    rng = np.random.default_rng(0)
    base = pl.DataFrame({"x": rng.normal(size=2000), "y": rng.normal(size=2000)})
    cur = pl.DataFrame({"x": rng.normal(0.4, size=2000), "y": rng.normal(size=2000)})
    det = DriftDetector()
    want = det.detect_feature_drift(base, cur, timestamp="t").to_dict()
    assert det.detect_feature_drift(base.to_pandas(), cur.to_arrow(), timestamp="t").to_dict() == (
        want
    )


@settings(deadline=None)
@given(
    n_symbols=st.integers(1, 3),
    n_dates=st.integers(12, 40),
    spans=st.lists(st.integers(0, 4), min_size=3, max_size=3),
    k=st.integers(1, 2),
    embargo=st.sampled_from([0.0, 0.05]),
    seed=st.integers(0, 2**16),
)
def test_cpcv_on_a_shuffled_pandas_panel_equals_the_time_sorted_polars_split(
    n_symbols, n_dates, spans, k, embargo, seed
):
    """Same rows, two inputs: a pandas (symbol, ts, label_end)-indexed panel in any row order,
    and the polars frame sorted by time. The splits must name the same rows."""
    from quantcli import CombinatorialPurgedCV

    dates = pd.date_range("2021-01-01", periods=n_dates, freq="D", tz="UTC")
    panel = pd.DataFrame(
        {
            "symbol": np.repeat([f"S{i}" for i in range(n_symbols)], n_dates),
            "ts": np.tile(dates, n_symbols),
        }
    )
    span = np.repeat(spans[:n_symbols], n_dates)
    panel["label_end"] = panel["ts"] + pd.to_timedelta(span, unit="D")
    panel = panel.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    X = panel.set_index(["symbol", "ts", "label_end"]).assign(f=1.0)
    cv = CombinatorialPurgedCV(n_splits=4, test_size=k, embargo_pct=embargo)
    by_time = panel.sort_values(["ts", "symbol"], kind="stable")
    pos = by_time.index.to_numpy()
    want = [
        (np.sort(pos[tr]), np.sort(pos[te]))
        for tr, te in cv.split(pl.from_pandas(by_time[["ts", "label_end"]]))
    ]
    got = list(cv.split(X))
    assert len(got) == cv.get_n_splits() == len(want)
    for (tr, te), (tr_w, te_w) in zip(got, want, strict=True):
        np.testing.assert_array_equal(tr, tr_w)
        np.testing.assert_array_equal(te, te_w)
        assert not set(tr) & set(te)
