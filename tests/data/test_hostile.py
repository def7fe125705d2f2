"""Hostile input at ingest: implausible or leap-second timestamps, duplicated columns, bytes that
are not UTF-8, ragged rows, symbols that serving would refuse or rich would read as markup, and
gaps against the expected bar spacing. Every refusal is exit code 2 with one line naming the
file, the line and the column, and nothing is written."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcli.data import check_spacing, ingest_frame, is_valid_symbol, validate_bars
from quantcli.data.spacing import infer_interval, parse_interval
from quantcli.data.window import TimestampWindow
from quantcli.errors import DataValidationError, InputError
from tests.data.conftest import snapshot

HEADER = "date,open,high,low,close,volume\n"
ROW = "2020-01-02,1,2,1,1.5,10\n"


def _bars(symbol: str, stamps: list[str]) -> pl.DataFrame:
    n = len(stamps)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "ts": [datetime.fromisoformat(s).replace(tzinfo=UTC) for s in stamps],
            "open": [1.0] * n,
            "high": [2.0] * n,
            "low": [0.5] * n,
            "close": [1.5] * n,
            "volume": [10.0] * n,
        }
    )


# (file name, bytes, the message's start after "Error: <path>")
REFUSED_FILES = [
    (
        "far.csv",
        (HEADER + ROW + "9999-12-31,1,2,1,1.5,10\n").encode(),
        " line 3, column 'ts': ts=9999-12-31 00:00:00 is outside [1900-01-01 00:00, ",
    ),
    (
        "ancient.csv",
        (HEADER + "0001-01-01,1,2,1,1.5,10\n").encode(),
        " line 2, column 'ts': ts=0001-01-01 00:00:00 is outside [1900-01-01 00:00, ",
    ),
    (
        "old.csv",
        (
            HEADER + ROW + ROW.replace("2020-01-02", "2020-01-03") + "1800-06-01,1,2,1,1.5,10\n"
        ).encode(),
        " line 4, column 'ts': ts=1800-06-01 00:00:00 is outside",
    ),
    (
        "leap.csv",
        (HEADER + "2020-12-31T23:59:60Z,1,2,1,1.5,10\n").encode(),
        " line 2, column 'ts': 2020-12-31T23:59:60Z: second 60 (a leap second) is not a valid",
    ),
    (
        "leap_naive.csv",
        (HEADER + ROW + "2016-12-31 23:59:60.5,1,2,1,1.5,10\n").encode(),
        " line 3, column 'ts': 2016-12-31 23:59:60.5: second 60",
    ),
    (
        "dup.csv",
        b"date,open,open,high,low,close,volume\n2020-01-02,1,1,2,1,1.5,10\n",
        " line 1, column 3: duplicated column name 'open' (also column 2)",
    ),
    (
        "latin1.csv",
        HEADER.encode() + ROW.encode() + b"2020-01-03,1,2,1,\xe91.5,10\n",
        " line 3, field 5: invalid UTF-8 byte 0xe9",
    ),
    (
        "ragged.csv",
        (HEADER + ROW + "2020-01-03,1,2,1,1.5,10,7\n").encode(),
        " line 3: 7 fields, the header has 6",
    ),
    (
        "ragged.csv.gz",
        gzip.compress((HEADER + ROW + ROW + "2020-01-06,1,2,1,1.5,10,,\n").encode(), mtime=0),
        " line 4: 8 fields, the header has 6",
    ),
    (
        "quote.csv",
        (HEADER + ROW + '2020-01-03,1,2,1,"1.5,10\n').encode(),
        " line ",
    ),
]


@pytest.mark.parametrize(("name", "data", "message"), REFUSED_FILES, ids=lambda v: str(v)[:12])
def test_a_hostile_file_is_refused_naming_file_line_and_column(
    qcli_home, tmp_path, qcli, name, data, message
):
    path = tmp_path / name
    path.write_bytes(data)
    code, out, err = qcli("data", "ingest", str(path), "--symbol", "SPX")
    assert (code, out) == (2, ""), err
    first = err.splitlines()[0]
    assert first.startswith(f"Error: {path}{message}"), err
    assert "Traceback" not in err
    assert snapshot(qcli_home) is None  # refused before the store was created


def test_a_parquet_file_naming_a_column_twice_is_refused(qcli_home, tmp_path, qcli):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["date", "open", "high", "open", "low", "close", "volume"]
    columns = [pa.array(["2020-01-02"])] + [pa.array([v]) for v in (1.0, 2.0, 2.0, 1.0, 1.5, 10.0)]
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table(columns, names=names), path)
    code, _, err = qcli("data", "ingest", str(path), "--symbol", "SPX")
    assert code == 2
    assert err.startswith(
        f"Error: {path}: column 4: duplicated column name 'open' (also column 2)"
    ), err
    assert snapshot(qcli_home) is None


@pytest.mark.parametrize(
    ("symbol", "shown"),
    [
        ("SPX\n", "'SPX\\n'"),
        ("[red]rich[/red]", "'[red]rich[/red]'"),
        ("S" * 5000, "'SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS..."),
        ("", "''"),
        ("A B", "'A B'"),
    ],
)
def test_the_symbol_option_follows_the_one_symbol_rule(qcli_home, tmp_path, qcli, symbol, shown):
    path = tmp_path / "p.csv"
    path.write_text(HEADER + ROW)
    code, _, err = qcli("data", "ingest", str(path), "--symbol", symbol)
    assert code == 2
    assert err == (f"Error: --symbol {shown}: a symbol is 1-32 letters, digits or . - _ ^ = /\n"), (
        err
    )  # one line; the markup is shown as written, not rendered
    assert snapshot(qcli_home) is None


@pytest.mark.parametrize(
    ("cell", "detail"),
    [
        ("[red]rich[/red]", "symbol '[red]rich[/red]' is not 1-32"),
        ("S" * 5000, "symbol '" + "S" * 40 + "' is not 1-32"),
        ('"SPX\nX"', "symbol 'SPX?X' is not 1-32"),
        ("ÄPFEL", "symbol 'ÄPFEL' is not 1-32"),
    ],
)
def test_a_symbol_column_cell_serving_would_refuse_is_refused_at_ingest(
    qcli_home, tmp_path, qcli, cell, detail
):
    path = tmp_path / "s.csv"
    path.write_text(f"date,symbol,open,high,low,close,volume\n2020-01-02,{cell},1,2,1,1.5,10\n")
    code, _, err = qcli("data", "ingest", str(path))
    assert code == 2
    assert err.startswith(f"Error: {path} line 2, column 'symbol': {detail}"), err
    assert "(invalid_symbol)" in err.splitlines()[0]
    assert snapshot(qcli_home) is None


def test_ingest_and_serving_apply_the_same_symbol_rule():
    from quantcli.serving.predict import check_symbols

    cases = ["SPX", "BRK.B", "^GSPC", "ES=F", "EUR/USD", "a_b-1", "S" * 32]
    bad = ["SPX\n", "\nSPX", "S" * 33, "", "A B", "[b]x", "ÄPFEL", "SPX\x00", "SP$X"]
    for s in cases:
        assert is_valid_symbol(s) and check_symbols([s]) == [s]
        validate_bars(_bars(s, ["2020-01-02"]))
    for s in bad:
        assert not is_valid_symbol(s)
        with pytest.raises(InputError, match="invalid ticker"):
            check_symbols([s])
        if s:  # the empty symbol is the `null` check's
            with pytest.raises(DataValidationError) as info:
                validate_bars(_bars(s, ["2020-01-02"]))
            assert [i["check"] for i in info.value.issues] == ["invalid_symbol"]


def test_the_window_moves_with_options_and_config(qcli_home, tmp_path, qcli):
    path = tmp_path / "old.csv"
    path.write_text(HEADER + "1885-03-02,1,2,1,1.5,10\n" + ROW)
    assert qcli("data", "validate", str(path), "--symbol", "SPX").code == 2
    args = ("data", "validate", str(path), "--symbol", "SPX")
    assert qcli(*args, "--earliest", "1885-01-01").code == 0
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nearliest = "1880-01-01"\n')
    assert qcli("data", "validate", str(path), "--symbol", "SPX", "--config", str(cfg)).code == 0
    code, _, err = qcli(
        "data", "validate", str(path), "--symbol", "SPX", "--earliest", "1880-01-01",
        "--latest", "2019-12-31",
    )  # fmt: skip
    assert code == 2
    assert "line 3, column 'ts': ts=2020-01-02 00:00:00 is outside [1880-01-01 00:00, " in err
    cfg.write_text('[data]\nearliest = "last tuesday"\n')
    code, _, err = qcli("data", "validate", str(path), "--symbol", "SPX", "--config", str(cfg))
    assert code == 2
    assert err.startswith(f"Error: {cfg}: [data] earliest must be a date (YYYY-MM-DD)"), err


def test_the_default_window_ends_one_day_after_now():
    now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    window = TimestampWindow.build(now=now)
    assert window.earliest == datetime(1900, 1, 1, tzinfo=UTC)
    assert window.latest == now + timedelta(days=1)
    bars = _bars("SPX", ["2026-01-16 11:59:59", "2026-01-16 12:00:01"])
    with pytest.raises(DataValidationError) as info:
        validate_bars(bars, window=window)
    assert info.value.issues[0]["count"] == 1
    assert info.value.issues[0]["examples"][0]["location"] == "row 1"


def test_a_frame_with_an_implausible_bar_leaves_the_store_unchanged(qcli_home):
    ingest_frame(_bars("SPX", ["2020-01-02", "2020-01-03"]))
    before = snapshot(qcli_home)
    with pytest.raises(DataValidationError, match="implausible_ts"):
        ingest_frame(_bars("SPX", ["2020-01-06", "9999-12-31"]))
    assert snapshot(qcli_home) == before


# -- gaps -------------------------------------------------------------------------------------


def _gap_rows(bars: pl.DataFrame, interval: str | None) -> list[str]:
    issue = check_spacing(bars, interval)
    return [] if issue is None else [e["location"] for e in issue.examples]


def test_daily_gaps_skip_weekends_and_single_holidays():
    # Thu 2 Jan, Fri 3 (weekend), Mon 6, (Tue 7 holiday) Wed 8, (Thu 9, Fri 10 missing) Mon 13
    stamps = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-08", "2020-01-13"]
    issue = check_spacing(_bars("SPX", stamps), "1d")
    assert issue.count == 1
    assert issue.examples == [
        {
            "source": "<frame>",
            "location": "row 4",
            "column": "ts",
            "detail": "SPX: 2 weekday(s) without a bar between 2020-01-08 00:00 and "
            "2020-01-13 00:00 (interval 1d)",
        }
    ]


def test_intraday_gaps_within_a_day_and_across_days():
    day1 = [f"2020-01-02 14:{m:02d}" for m in (30, 35, 40, 50, 55)]  # 14:45 missing
    day2 = [f"2020-01-03 14:{m:02d}" for m in (30, 35)]  # overnight: not a gap
    day3 = ["2020-01-08 14:30"]  # Mon 6 and Tue 7 without a bar: a gap
    bars = _bars("ES=F", day1 + day2 + day3)
    assert _gap_rows(bars, "5m") == ["row 3", "row 7"]
    assert _gap_rows(bars, "10m") == ["row 7"]  # 14:40 -> 14:50 is one 10-minute step
    assert check_spacing(bars, "5m").examples[0]["detail"] == (
        "ES=F: 1 bar(s) missing between 2020-01-02 14:40 and 2020-01-02 14:50 (interval 5m)"
    )


def test_the_interval_is_inferred_from_the_median_spacing():
    stamps = [f"2020-01-02 10:{m:02d}" for m in range(0, 60, 5) if m != 30]
    bars = _bars("X", stamps)
    assert infer_interval(bars) == timedelta(minutes=5)
    assert _gap_rows(bars, None) == ["row 6"]
    assert infer_interval(bars.head(5)) is None  # too few spacings to infer anything
    assert check_spacing(bars.head(5)) is None


def test_weekly_bars_and_bad_intervals():
    bars = _bars("X", ["2020-01-03", "2020-01-10", "2020-01-24", "2020-01-30"])
    assert _gap_rows(bars, "1w") == ["row 2"]  # a week missing; 6 days is no gap
    assert parse_interval("30s") == timedelta(seconds=30)
    for bad in ("0d", "1y", "d", "-1h", "1.5h", "1d\n", "9999999d"):
        with pytest.raises(InputError, match="--interval must be a count and a unit"):
            parse_interval(bad)


def test_ingest_reports_gaps_as_warnings_in_json(qcli_home, tmp_path, qcli):
    path = tmp_path / "g.csv"
    days = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-13", "2020-01-14"]
    path.write_text(HEADER + "".join(ROW.replace("2020-01-02", d) for d in days))
    args = ("data", "ingest", str(path), "--symbol", "SPX")
    code, out, err = qcli(*args, "--interval", "1d", "--json")
    assert code == 0, err
    gap = {w["check"]: w for w in json.loads(out)["quality"]["warnings"]}["gap"]
    assert (gap["count"], gap["examples"][0]["location"]) == (1, "line 5")
    assert gap["examples"][0]["detail"].startswith("SPX: 4 weekday(s) without a bar")
    code, _, err = qcli("data", "ingest", str(path), "--symbol", "SPX", "--interval", "daily")
    assert code == 2 and "--interval must be a count and a unit" in err


def test_the_sample_reports_exactly_its_three_market_closures_per_symbol():
    from quantcli.data import load_sample

    issue = check_spacing(load_sample(), "1d")
    after = sorted(e["detail"].split(" and ")[1][:10] for e in issue.examples)
    assert issue.count == 6
    assert after == ["2001-09-17", "2001-09-17", "2007-01-03", "2007-01-03", "2012-10-31"]


@settings(max_examples=2 * settings.default.max_examples, deadline=None)
@given(symbol=st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9.\-_^=/]{1,34}\n?", fullmatch=True))
def test_ingest_and_serving_agree_on_every_string(symbol):
    """One rule: a symbol ingest stores is one serving accepts, and the other way round."""
    from quantcli.serving.predict import check_symbols

    try:
        check_symbols([symbol])
        served = True
    except InputError:
        served = False
    try:
        validate_bars(_bars(symbol, ["2020-01-02"]))
        stored = True
    except DataValidationError:
        stored = False
    assert served == stored == is_valid_symbol(symbol)


def test_stored_symbols_are_shown_literally_not_as_markup(qcli_home, qcli):
    """A store written before the rule may hold any symbol: the summary escapes it."""
    import duckdb

    ingest_frame(_bars("SPX", ["2020-01-02"]))
    con = duckdb.connect(str(qcli_home / "offline.duckdb"))
    con.execute(
        "INSERT INTO bars SELECT '[red]rich[/red]', ts, open, high, low, close, volume FROM bars"
    )
    con.close()
    code, out, err = qcli("data", "summary")
    assert code == 0, err
    assert "[red]rich[/red]" in out
