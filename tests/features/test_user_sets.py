"""User feature sets: where they are found, `qcli features new | check | list --all`, errors
naming file, line and key, the declaration hash that keeps a released version from changing,
frequency defaults, and the generated kind reference in docs/features.md."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import InputError, NotFoundError
from quantcli.features import load_feature_set
from quantcli.features.definitions import parse_feature_set
from quantcli.features.reference import BEGIN, END, kinds_markdown
from quantcli.frequency import default_periods_per_year

DOCS = Path(__file__).resolve().parents[2] / "docs" / "features.md"

SMALL = """[feature_set]
name = "desk"
version = 1
table = "desk_features_v1"
frequency = "1h"

[[features]]
name = "ema_5"
kind = "ema"
params = { window = 5 }

[[features]]
name = "cci_5"
kind = "cci"
params = { window = 5 }

[[features]]
name = "cci_5_lag"
kind = "lag"
params = { of = "cci_5", periods = 2 }

[[labels]]
name = "fwd_1"
kind = "forward_return"
params = { horizon = 1 }
"""


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def test_user_sets_are_found_in_qcli_home_and_named_directories_first(qcli_home, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    _write(qcli_home / "feature_defs", "desk_v1", SMALL)
    fs = load_feature_set("desk_v1")
    assert fs.path == qcli_home / "feature_defs" / "desk_v1.toml"
    assert (fs.frequency, fs.interval, fs.periods_per_year) == ("1h", timedelta(hours=1), 6048.0)
    assert [f.lookback for f in fs.features] == [4, 4, 6] and fs.warmup == 6
    other = _write(
        tmp_path / "mine",
        "desk_v1",
        SMALL.replace(
            'window = 5 }\n\n[[features]]\nname = "cci_5"',
            'window = 7 }\n\n[[features]]\nname = "cci_5"',
        ),
    )
    monkeypatch.setenv("QCLI_FEATURE_DEFS", str(other.parent))
    assert load_feature_set("desk_v1").path == other  # the named directory comes first
    assert load_feature_set("desk_v1").features[0].params == {"window": 7}
    assert load_feature_set("technical_v1").bundled


def test_a_user_set_named_like_a_bundled_one_is_refused(qcli_home):
    _write(qcli_home / "feature_defs", "technical_v1", SMALL)
    with pytest.raises(InputError, match=r"technical_v1\.toml: feature set 'technical_v1' clashes"):
        load_feature_set("technical_v1")


def test_a_named_directory_that_does_not_exist_is_an_error(qcli_home, monkeypatch):
    monkeypatch.setenv("QCLI_FEATURE_DEFS", str(qcli_home / "nope"))
    with pytest.raises(InputError, match=r"QCLI_FEATURE_DEFS / --defs: .*nope is not a directory"):
        load_feature_set("desk_v1")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('kind = "cci"', 'kind = "ccx"'),
            r":14: \[\[features\]\] #2 \(cci_5\): key `kind`: "
            r"unknown feature kind 'ccx'",
        ),
        (
            (
                'window = 5 }\n\n[[features]]\nname = "cci_5"',
                'window = 0 }\n\n[[features]]\nname = "cci_5"',
            ),
            r":10: \[\[features\]\] #1 \(ema_5\): key `params`: param `window` "
            r"must be >= 2, got 0",
        ),
        (
            ('of = "cci_5"', 'of = "rsi_14"'),
            r":20: .*key `params` names feature 'rsi_14', which "
            r"is not declared before it",
        ),
        (
            ('frequency = "1h"', 'frequency = "hourly"'),
            r":5: \[feature_set\]: key `frequency`: "
            r"must be a bar interval",
        ),
        (
            ("horizon = 1", "horizon = 0"),
            r":25: label 'fwd_1': key `params.horizon` must be an "
            r"integer >= 1 \(bars\)",
        ),
        (('name = "cci_5_lag"', 'name = "cci_5"'), r":18: duplicate feature name 'cci_5'"),
        # entity/timestamp are spliced into the table's DDL: only the bars' key columns pass
        (
            (
                'frequency = "1h"',
                'frequency = "1h"\nentity = "symbol VARCHAR); DROP TABLE bars; --"',
            ),
            r":6: \[feature_set\]: key `entity` must be 'symbol' \(the bars' key column",
        ),
        (
            ('frequency = "1h"', 'frequency = "1h"\ntimestamp = "ticker"'),
            r":6: \[feature_set\]: key `timestamp` must be 'ts'",
        ),
        (
            ('frequency = "1h"', 'frequency = "1h"\ninputs = ["close", "vwap"]'),
            r":6: \[feature_set\]: key `inputs` must list distinct bar columns",
        ),
        (
            ('frequency = "1h"', 'frequency = "1h"\nonline_ttl_days = -1'),
            r":6: \[feature_set\]: key `online_ttl_days` must be between 1 and 36500",
        ),
        # a build deletes and rewrites its table: the store's own tables are not for features
        *(
            (
                ('table = "desk_features_v1"', f'table = "{t}"'),
                rf":4: \[feature_set\]: key `table` names a table of the store itself \('{t}'\)",
            )
            for t in ("bars", "feature_builds", "ingests", "feature_stream_state", "staged_bars")
        ),
        (
            ("[[labels]]", 'colour = "red"\n\n[[labels]]'),
            r":22: \[\[features\]\] #3 "
            r"\(cci_5_lag\): unknown key `colour`",
        ),
    ],
)
def test_check_names_file_line_and_key(tmp_path, edit, message):
    path = _write(tmp_path, "desk_v1", SMALL.replace(*edit))
    with pytest.raises(InputError, match=re.escape(str(path)) + message):
        parse_feature_set(path)


def test_cli_new_check_list_and_the_exit_code_of_a_bad_file(qcli_home, qcli):
    code, out, _ = qcli("features", "new", "desk_v1", "--json")
    written = json.loads(out)
    assert code == 0 and written["path"] == str(qcli_home / "feature_defs" / "desk_v1.toml")
    code, out, _ = qcli("features", "check", written["path"], "--json")
    checked = json.loads(out)
    assert code == 0 and checked["table"] == "desk_features_v1" and checked["warmup"] == 62

    code, out, _ = qcli("features", "new", "copy_v2", "--from", "technical_v1", "--json")
    copy = load_feature_set("copy_v2")
    assert code == 0 and (copy.table, copy.version) == ("copy_features_v2", 2)
    assert copy.feature_hashes() == load_feature_set("technical_v1").feature_hashes()

    code, _, err = qcli("features", "new", "desk_v1")  # exists
    assert code == 2 and "already exists" in err
    code, _, err = qcli("features", "new", "technical_v1")
    assert code == 2 and "bundled feature set" in err

    bad = Path(written["path"])
    bad.write_text(bad.read_text().replace('kind = "cci"', 'kind = "cci2"'))
    code, out, err = qcli("features", "check", str(bad))
    assert code == 2 and out == ""
    assert re.search(rf"{re.escape(str(bad))}:\d+: \[\[features\]\] #2 \(cci_14\): key `kind`", err)

    code, out, _ = qcli("features", "list", "--all", "--json")
    sets = {s["name"]: s for s in json.loads(out)["feature_sets"]}
    assert sets["technical_v1"]["origin"] == "bundled" and sets["copy_v2"]["origin"] == "user"
    assert "cci2" in sets["desk_v1"]["error"]


def test_cli_defs_option_names_a_directory(qcli_home, tmp_path, qcli, monkeypatch):
    monkeypatch.delenv("QCLI_FEATURE_DEFS", raising=False)
    _write(tmp_path / "d", "desk_v1", SMALL)
    code, out, _ = qcli(
        "features",
        "--defs",
        str(tmp_path / "d"),
        "list",
        "--feature-set",
        "desk_v1",
        "--json",
    )
    os.environ.pop("QCLI_FEATURE_DEFS", None)
    assert code == 0 and [f["name"] for f in json.loads(out)["features"]][2] == "cci_5_lag"


def test_a_released_version_cannot_change_silently(qcli_home, qcli):
    ingest_frame(synthetic_universe(2, 60, seed=3))
    path = _write(qcli_home / "feature_defs", "desk_v1", SMALL)
    code, out, _ = qcli("features", "build", "--feature-set", "desk_v1", "--json")
    assert code == 0 and json.loads(out)["rows_written"] == 2 * (60 - 6)
    # a reworded description is not a new definition
    path.write_text(
        SMALL.replace(
            'params = { window = 5 }\n\n[[features]]\nname = "cci_5"',
            'params = { window = 5 }\ndescription = "reworded"\n\n[[features]]\nname = "cci_5"',
        )
    )
    code, _, _ = qcli("features", "build", "--feature-set", "desk_v1", "--json")
    assert code == 0
    path.write_text(
        SMALL.replace(
            'kind = "cci"\nparams = { window = 5 }', 'kind = "cci"\nparams = { window = 6 }'
        )
    )
    code, out, err = qcli("features", "build", "--feature-set", "desk_v1")
    assert code == 2 and out == ""
    assert "version 1 was built with another definition (changed: cci_5, cci_5_lag)" in err
    assert "desk_v2.toml" in err


def test_a_table_belongs_to_one_feature_set(qcli_home, qcli):
    """A copied declaration that kept another set's table is refused before anything is
    written: the build would rewrite the other set's rows under its name."""
    ingest_frame(synthetic_universe(2, 200, seed=3))
    code, _, _ = qcli("features", "build", "--feature-set", "technical_v1")
    assert code == 0
    before = qcli("features", "show", "SYM0000", "--last", "3", "--json").out
    stolen = SMALL.replace('table = "desk_features_v1"', 'table = "technical_features_v1"')
    _write(qcli_home / "feature_defs", "desk_v1", stolen)
    code, out, err = qcli("features", "build", "--feature-set", "desk_v1")
    assert code == 2 and out == ""
    assert "table 'technical_features_v1' holds feature set 'technical_v1', not 'desk_v1'" in err
    assert qcli("features", "show", "SYM0000", "--last", "3", "--json").out == before

    # a table no build recorded (made by hand, say) but with other columns: refused too
    import duckdb

    con = duckdb.connect(str(qcli_home / "offline.duckdb"))
    con.execute("CREATE TABLE desk_by_hand (symbol VARCHAR, ts TIMESTAMPTZ, x DOUBLE)")
    con.close()
    _write(qcli_home / "feature_defs", "hand_v1",
           SMALL.replace('table = "desk_features_v1"', 'table = "desk_by_hand"'))  # fmt: skip
    code, _, err = qcli("features", "build", "--feature-set", "hand_v1")
    assert code == 2
    assert "table 'desk_by_hand' exists with other columns than feature set 'hand_v1'" in err


def test_frequency_defaults():
    assert default_periods_per_year(timedelta(days=1)) == 252
    assert default_periods_per_year(timedelta(weeks=1)) == 52
    assert default_periods_per_year(timedelta(minutes=5)) == 252 * 288
    with pytest.raises(NotFoundError, match="unknown feature set 'nope_v1'"):
        load_feature_set("nope_v1")


def test_docs_kind_reference_is_generated_from_the_registry():
    text = DOCS.read_text()
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert section == "\n" + kinds_markdown()


def test_docs_worked_user_set_is_a_valid_declaration(tmp_path):
    text = DOCS.read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "fx_hourly" in b)
    fs = parse_feature_set(_write(tmp_path, "fx_hourly_v1", block))
    assert (fs.frequency, fs.periods_per_year, len(fs.features)) == ("1h", 6240.0, 8)
    assert fs.feature("cci_20_z").lookback == 19 + 119


def test_ingest_warns_when_bar_spacing_contradicts_the_sets_frequency(qcli_home, qcli):
    _write(qcli_home / "feature_defs", "desk_v1", SMALL)  # frequency = "1h"
    code, out, _ = qcli("data", "ingest", "--sample", "--feature-set", "desk_v1", "--json")
    spacing = json.loads(out)["spacing"]
    assert code == 0 and spacing["frequency"] == "1h"
    assert spacing["mismatched"] == {"IXIC": "1 day, 0:00:00", "SPX": "1 day, 0:00:00"}
    code, out, _ = qcli("data", "ingest", "--sample", "--feature-set", "technical_v1", "--json")
    assert code == 0 and json.loads(out)["spacing"]["mismatched"] == {}


def test_bar_spacing_report_counts_gaps_against_the_interval():
    from quantcli.data import load_sample
    from quantcli.features.bar_spacing import check_bar_spacing

    report = check_bar_spacing(load_sample(), load_feature_set("technical_v1"))
    assert report.mismatched == {} and report.gaps == 6  # market closures, e.g. 2001-09-11
    assert "2001-09-10" in report.messages()[0]
