"""Hypothesis: valid frames round-trip through the real store; any single defect is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantcli.data import ingest_frame, synthetic_universe
from quantcli.errors import DataValidationError
from quantcli.store.offline import OfflineStore
from tests.data.conftest import file_digest

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
prices = st.floats(0.01, 1e6, allow_nan=False, allow_infinity=False)
spreads = st.floats(0.0, 0.5, allow_nan=False)
# the one symbol rule (quantcli.data.symbols): ASCII letters, digits and . - _ ^ = /
symbols = st.text(
    alphabet="ABCXYZabcxyz0189.-_^=/",
    min_size=1,
    max_size=8,
)


@st.composite
def valid_bars(draw) -> pl.DataFrame:
    """1-3 symbols x 1-12 bars at arbitrary distinct instants; OHLC consistent by construction."""
    rows = []
    for sym in draw(st.lists(symbols, min_size=1, max_size=3, unique=True)):
        # up to 2025: inside the default plausibility window
        seconds = draw(st.lists(st.integers(0, 8 * 10**8), min_size=1, max_size=12, unique=True))
        for sec in seconds:
            o, c = draw(prices), draw(prices)
            # x * (1 + u) >= x and x * (1 - d) <= x hold exactly in IEEE arithmetic for u, d >= 0
            high = max(o, c) * (1.0 + draw(spreads))
            low = min(o, c) * (1.0 - draw(spreads))
            vol = draw(st.floats(0.0, 1e12, allow_nan=False))
            rows.append((sym, EPOCH + timedelta(seconds=sec), o, high, low, c, vol))
    df = pl.DataFrame(
        rows,
        schema={
            "symbol": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
        },
        orient="row",
    )
    # any input order: the ingest sorts (and reports it)
    return df.sample(fraction=1.0, shuffle=True, seed=draw(st.integers(0, 2**16)))


@pytest.fixture
def store(tmp_path):
    with OfflineStore(tmp_path / "offline.duckdb") as s:
        yield s


# one real store file per test; each example starts from an empty bars table
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(df=valid_bars())
def test_valid_frames_round_trip_unchanged(store, df):
    with store.transaction() as con:
        con.execute("DELETE FROM bars")
    result = ingest_frame(df, store=store)
    assert result.rows_inserted == df.height
    back = pl.from_arrow(store.con.sql("SELECT * FROM bars ORDER BY symbol, ts").to_arrow_table())
    assert back.equals(df.sort("symbol", "ts"))


# the same, through the file readers: text (CSV) and Parquet
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(df=valid_bars(), fmt=st.sampled_from(["csv", "parquet"]))
def test_valid_files_round_trip_unchanged(store, tmp_path, df, fmt):
    from quantcli.data import ingest_files

    path = tmp_path / f"bars.{fmt}"
    df.write_csv(path) if fmt == "csv" else df.write_parquet(path)
    with store.transaction() as con:
        con.execute("DELETE FROM bars")
    result = ingest_files([path], store=store)
    assert result.rows_inserted == df.height
    back = pl.from_arrow(store.con.sql("SELECT * FROM bars ORDER BY symbol, ts").to_arrow_table())
    assert back.equals(df.sort("symbol", "ts"))


def _inject(df: pl.DataFrame, row: int, kind: str) -> pl.DataFrame:
    at = pl.int_range(0, pl.len()) == row

    def put(col: str, value: pl.Expr) -> pl.Expr:
        return pl.when(at).then(value).otherwise(pl.col(col)).alias(col)

    if kind == "duplicate_key":
        return pl.concat([df, df[[row]].with_columns(pl.col("close") * 1.01)])
    edits = {
        "null": lambda: put("close", pl.lit(None, pl.Float64)),
        "nan": lambda: put("volume", pl.lit(float("nan"))),
        "empty_symbol": lambda: put("symbol", pl.lit("")),
        "null_ts": lambda: put("ts", pl.lit(None, pl.Datetime("us", "UTC"))),
        "non_finite": lambda: put("open", pl.lit(float("inf"))),
        "non_positive_price": lambda: put("low", -pl.col("low")),
        "high_below": lambda: put("high", pl.max_horizontal("open", "close") * 0.5),
        "low_above": lambda: put("low", pl.min_horizontal("open", "close") * 2.0),
        "negative_volume": lambda: put("volume", -pl.col("volume") - 1.0),
        "newline_symbol": lambda: put("symbol", pl.col("symbol") + "\n"),
        "long_symbol": lambda: put("symbol", pl.lit("S" * 5000)),
        "markup_symbol": lambda: put("symbol", pl.lit("[red]rich[/red]")),
        "year_9999": lambda: put("ts", pl.lit(datetime(9999, 12, 31, tzinfo=UTC))),
        "year_1": lambda: put("ts", pl.lit(datetime(1, 1, 1, tzinfo=UTC))),
        "year_1800": lambda: put("ts", pl.lit(datetime(1800, 6, 1, tzinfo=UTC))),
    }
    return df.with_columns(edits[kind]())


EXPECTED_CHECK = {
    "null": "null",
    "nan": "null",
    "empty_symbol": "null",
    "null_ts": "null",
    "non_finite": "non_finite",
    "non_positive_price": "non_positive_price",
    "high_below": "ohlc_inconsistent",
    "low_above": "ohlc_inconsistent",
    "negative_volume": "negative_volume",
    "duplicate_key": "duplicate_key",
    "newline_symbol": "invalid_symbol",
    "long_symbol": "invalid_symbol",
    "markup_symbol": "invalid_symbol",
    "year_9999": "implausible_ts",
    "year_1": "implausible_ts",
    "year_1800": "implausible_ts",
}


@pytest.fixture
def populated_home(qcli_home):
    ingest_frame(synthetic_universe(2, 25, seed=4))
    return qcli_home, file_digest(qcli_home)


# the store in $QCLI_HOME is shared by the examples on purpose: each must leave it unchanged
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(df=valid_bars(), data=st.data(), kind=st.sampled_from(sorted(EXPECTED_CHECK)))
def test_any_single_defect_is_refused_and_store_unchanged(populated_home, df, data, kind):
    home, baseline = populated_home
    row = data.draw(st.integers(0, df.height - 1))
    bad = _inject(df, row, kind)
    with pytest.raises(DataValidationError) as info:
        ingest_frame(bad, source="gen")
    checks = {issue["check"] for issue in info.value.issues}
    assert EXPECTED_CHECK[kind] in checks
    assert info.value.exit_code == 2
    # validation refuses before the store is opened: the files are byte-for-byte the same
    assert file_digest(home) == baseline
