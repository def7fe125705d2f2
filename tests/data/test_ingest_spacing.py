"""A plain `qcli data ingest` warns when a symbol's bar spacing contradicts the declared
interval: --interval, else the configured feature set's frequency (technical_v1: 1d)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from quantcli.data.synthetic import synthetic_universe


def _hourly(path, symbol: str = "HRLY", n: int = 240):
    bars = synthetic_universe(1, n, seed=5).with_columns(
        pl.lit(symbol).alias("symbol"),
        pl.datetime_range(
            datetime(2021, 3, 1, tzinfo=UTC),
            datetime(2021, 3, 1, tzinfo=UTC) + timedelta(hours=n - 1),
            "1h",
            eager=True,
        ).alias("ts"),
    )
    bars.write_parquet(path)
    return path


def _daily(path, symbol: str = "DALY", n: int = 240):
    synthetic_universe(1, n, seed=6).with_columns(pl.lit(symbol).alias("symbol")).write_parquet(
        path
    )
    return path


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long stderr lines


def test_hourly_bars_warn_against_the_configured_daily_set(qcli_home, tmp_path, qcli):
    path = _hourly(tmp_path / "hourly.parquet")
    run = qcli("data", "ingest", path)
    assert run.code == 0, run.err
    assert (
        "Warning: bars of 1 symbol(s) are not spaced 1d as the feature set technical_v1 "
        "declares (median spacing): HRLY (1:00:00)"
    ) in _flat(run.err)
    spacing = qcli("data", "ingest", path, "--json").json["spacing"]
    assert spacing["frequency"] == "1d" and spacing["mismatched"] == {"HRLY": "1:00:00"}


def test_daily_bars_warn_against_an_hourly_interval(qcli_home, tmp_path, qcli):
    path = _daily(tmp_path / "daily.parquet")
    run = qcli("data", "ingest", path, "--interval", "1h")
    assert run.code == 0, run.err
    assert (
        "Warning: bars of 1 symbol(s) are not spaced 1h as --interval declares (median "
        "spacing): DALY (1 day, 0:00:00)"
    ) in _flat(run.err)


def test_bars_spaced_as_declared_warn_nothing(qcli_home, tmp_path, qcli):
    run = qcli("data", "ingest", _hourly(tmp_path / "h.parquet"), "--interval", "1h", "--json")
    assert run.code == 0 and run.json["spacing"]["mismatched"] == {}
    run = qcli("data", "ingest", _daily(tmp_path / "d.parquet"))
    assert run.code == 0 and "not spaced" not in run.err


def test_the_configured_feature_set_sets_the_default_interval(qcli_home, tmp_path, qcli):
    (qcli_home / "feature_defs").mkdir()
    (qcli_home / "feature_defs" / "hourly_v1.toml").write_text(
        '[feature_set]\nname = "hourly"\nversion = 1\ntable = "hourly_features_v1"\n'
        'frequency = "1h"\n\n[[features]]\nname = "ema_5"\nkind = "ema"\n'
        "params = { window = 5 }\n"
    )
    config = tmp_path / "desk.toml"
    config.write_text('[features]\nfeature_set = "hourly_v1"\n')
    run = qcli("data", "ingest", _daily(tmp_path / "d.parquet"), "--config", config)
    assert run.code == 0, run.err
    assert (
        "not spaced 1h as the feature set hourly_v1 declares (median spacing): "
        "DALY (1 day, 0:00:00)"
    ) in _flat(run.err)


def test_the_library_checks_only_when_asked(qcli_home, tmp_path):
    from quantcli.data import ingest_files

    result = ingest_files([_hourly(tmp_path / "h.parquet")])
    assert result.spacing is None and "spacing" not in result.to_dict()
    result = ingest_files([_hourly(tmp_path / "h.parquet")], declared_interval="1d")
    assert result.spacing.mismatched == {"HRLY": "1:00:00"}
    assert result.warnings == [
        "bars of 1 symbol(s) are not spaced 1d as --interval declares (median spacing): "
        "HRLY (1:00:00)"
    ]
