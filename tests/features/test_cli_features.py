"""`qcli features build | list | show` through the real entry point (in-process)."""

from __future__ import annotations

import json

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe


def test_build_list_show_json(qcli_home, qcli):
    ingest_frame(synthetic_universe(2, 260, seed=9))
    code, out, _ = qcli("features", "build", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["rows_written"], result["warmup_rows_dropped"]) == (2 * 61, 2 * 199)
    assert result["quality"]["non_finite"] == 0

    code, out, _ = qcli("features", "build", "--json")
    assert (code, json.loads(out)["rows_written"]) == (0, 0)  # incremental: nothing new

    code, out, _ = qcli("features", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and len(listed["features"]) == 29
    assert listed["table_status"]["rows"] == 2 * 61
    assert listed["table_status"]["last_build"]["rows_written"] == 0
    assert listed["table_status"]["last_build"]["engine"] == "kernel"

    code, out, _ = qcli("features", "show", "SYM0001", "--last", "3", "--json")
    shown = json.loads(out)
    assert code == 0 and len(shown["rows"]) == 3
    assert shown["rows"][-1]["ts"] > shown["rows"][0]["ts"]
    assert set(shown["rows"][0]) == {"ts", *listed_names(listed)}


def listed_names(listed: dict) -> list[str]:
    return [f["name"] for f in listed["features"]]


def test_human_output_and_errors(qcli_home, qcli):
    ingest_frame(synthetic_universe(1, 230, seed=2))
    code, out, _ = qcli("features", "build")
    assert code == 0 and "rows_written" in out and "31" in out
    code, out, _ = qcli("features", "show", "SYM0000", "--last", "2")
    assert code == 0 and "rsi_14" in out

    code, _, err = qcli("features", "show", "NOPE")
    assert code == 2
    assert "no feature rows for symbol 'NOPE'" in err and "SYM0000" in err
    code, _, err = qcli("features", "build", "--since", "2020-02-30")
    assert code == 2 and "--since: cannot parse '2020-02-30'" in err
    code, _, err = qcli("features", "build", "--symbols", "AAA,BBB")
    assert code == 2 and "--symbols: no bars for AAA, BBB" in err
    code, _, err = qcli("features", "show", "SYM0000", "--last", "0")
    assert code == 2 and "--last must be between 1 and 1,000,000" in err
    code, _, err = qcli("features", "show", "SYM0000", "--last", str(10**20))  # past 64 bits
    assert code == 2 and "--last must be between 1 and 1,000,000" in err
    code, _, err = qcli("data", "summary", "--recent", str(10**20))
    assert code == 2 and "--recent must be between 0 and 1,000,000" in err
    code, _, err = qcli("features", "list", "--feature-set", "nope")
    assert code == 2 and "unknown feature set 'nope'" in err


def test_show_labels_intraday_rows_with_their_time(qcli_home, qcli):
    import polars as pl

    bars = synthetic_universe(1, 230, seed=2)
    hourly = bars.with_columns(
        (
            pl.datetime(2024, 1, 1, time_zone="UTC") + pl.duration(hours=pl.int_range(pl.len()))
        ).alias("ts")
    )
    ingest_frame(hourly)
    assert qcli("features", "build").code == 0
    code, out, _ = qcli("features", "show", "SYM0000", "--last", "2")
    last = hourly["ts"].max()
    assert code == 0
    assert last.strftime("%Y-%m-%d %H:%M:%S") in out
    assert hourly["ts"].sort()[-2].strftime("%Y-%m-%d %H:%M:%S") in out
