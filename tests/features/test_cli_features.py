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
    assert code == 2 and "--last must be at least 1" in err
    code, _, err = qcli("features", "list", "--feature-set", "nope")
    assert code == 2 and "unknown feature set 'nope'" in err
