"""The `[guard]` config section: defaults, a TOML override, refused keys and values."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from quantcli.cli import main
from quantcli.config import DEFAULTS, load_config
from quantcli.errors import InputError
from quantcli.monitoring.guard import GuardThresholds


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_guard_defaults_are_the_seed_thresholds():
    seed = {
        "min_sharpe": 0.8,
        "sharpe_days": 3,
        "max_drawdown": -0.25,
        "warn_drawdown": -0.20,
        "max_error_rate": 0.01,
        "warn_error_rate": 0.005,
        "max_slow_share": 0.05,
        "max_drifted_features": 5,
    }
    assert DEFAULTS["guard"] == seed
    assert asdict(GuardThresholds()) == seed
    assert GuardThresholds.from_config(load_config(None)) == GuardThresholds()


def test_toml_override_changes_one_threshold(tmp_path):
    cfg_file = tmp_path / "guard.toml"
    cfg_file.write_text("[guard]\nmax_error_rate = 0.02\nsharpe_days = 5\n")
    t = GuardThresholds.from_config(load_config(cfg_file))
    assert (t.max_error_rate, t.sharpe_days) == (0.02, 5)
    assert asdict(t) == {**DEFAULTS["guard"], "max_error_rate": 0.02, "sharpe_days": 5}


def _snapshot(tmp_path, errors: int):
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps({"requests": 5000, "errors": errors, "slow_requests": 0}))
    return str(p)


def test_guard_command_reads_the_config(qcli_home, tmp_path, capsys):
    metrics = _snapshot(tmp_path, 75)  # 1.5 % of requests failed
    code, out, err = run(capsys, "monitor", "guard", "--metrics", metrics, "--json")
    assert code == 1, err
    assert json.loads(out)["severity"] == "CRITICAL"
    cfg_file = tmp_path / "guard.toml"
    cfg_file.write_text("[guard]\nmax_error_rate = 0.02\n")
    code, out, err = run(
        capsys, "monitor", "guard", "--metrics", metrics, "--config", str(cfg_file), "--json"
    )
    assert code == 0, err
    r = json.loads(out)
    assert r["severity"] == "WARNING"
    assert r["thresholds"]["max_error_rate"] == 0.02
    assert r["findings"][0] == {
        "check": "error_rate",
        "severity": "WARNING",
        "message": "error rate 1.50% above 0.5%",
        "value": 0.015,
        "threshold": 0.005,
    }


def _guard_events() -> int:
    from quantcli.monitoring.state import monitoring_store

    with monitoring_store() as store:
        return store.con.execute("SELECT count(*) FROM monitor_guard_events").fetchone()[0]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[guard]\nmax_error = 0.02\n", "unknown key 'max_error' in [guard]"),
        ("[guard]\nsharpe_days = 0\n", "[guard] sharpe_days must be at least 1, got sharpe_days=0"),
        ('[guard]\nmax_slow_share = "5%"\n', "[guard] max_slow_share must be a number"),
        ("[guard]\nwarn_drawdown = -0.3\n", "warn_drawdown must be at or above max_drawdown"),
    ],
)
def test_bad_guard_config_exits_2_naming_file_and_key(qcli_home, tmp_path, capsys, toml, message):
    cfg_file = tmp_path / "guard.toml"
    cfg_file.write_text(toml)
    before = _guard_events()
    code, out, err = run(
        capsys, "monitor", "guard", "--metrics", _snapshot(tmp_path, 0), "--config", str(cfg_file)
    )
    assert code == 2
    first = err.strip().splitlines()[0]
    assert first.startswith(f"Error: {cfg_file}: ") and message in first, err
    assert out == ""
    assert _guard_events() == before  # nothing recorded


def test_unknown_guard_key_is_refused_by_load_config(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[guard]\nmin_sharp = 1.0\n")
    with pytest.raises(InputError, match=r"unknown key 'min_sharp' in \[guard\]") as exc:
        load_config(cfg_file)
    assert "max_drifted_features" in exc.value.hint  # the hint lists the known keys
