"""`load_config`: the embedded defaults, TOML overrides, and values of the wrong type refused."""

from __future__ import annotations

import pytest

from quantcli.config import DEFAULTS, load_config
from quantcli.errors import InputError


def test_no_file_gives_a_copy_of_the_defaults():
    cfg = load_config(None)
    assert cfg == DEFAULTS
    cfg["gates"]["min_sharpe"] = 99.0
    assert DEFAULTS["gates"]["min_sharpe"] == 1.2  # callers cannot edit the defaults


def test_override_keeps_the_other_keys_and_accepts_an_integer_for_a_float(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[gates]\nmin_sharpe = 1\n[cpcv]\nn_groups = 6\n[lightgbm]\nmax_bin = 63\n")
    cfg = load_config(path)
    assert cfg["gates"] == {**DEFAULTS["gates"], "min_sharpe": 1}
    assert cfg["cpcv"]["n_groups"] == 6 and cfg["cpcv"]["n_test_groups"] == 2
    assert cfg["lightgbm"]["max_bin"] == 63  # LightGBM takes extra parameters


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[gates]\nmin_sharpe = "1.2"\n', "[gates] min_sharpe must be a number, got '1.2'"),
        ("[cpcv]\nn_groups = 6.5\n", "[cpcv] n_groups must be an integer, got 6.5"),
        ("[retrain]\nmin_samples = true\n", "[retrain] min_samples must be an integer, got True"),
        ("[drift]\npsi_threshold = false\n", "[drift] psi_threshold must be a number, got False"),
        ("[monitor]\nwindow_size = [1000]\n", "[monitor] window_size must be an integer"),
        ("[features]\nfeature_set = 1\n", "[features] feature_set must be a string, got 1"),
        (
            '[registry]\nrequired_verdicts = "backtest"\n',
            "[registry] required_verdicts must be a list, got 'backtest'",
        ),
        ("[lightgbm]\nseed = 4.2\n", "[lightgbm] seed must be an integer, got 4.2"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_file_section_and_key(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(InputError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: {message}")
    assert exc.value.exit_code == 2


def test_cli_reports_a_wrongly_typed_value_with_exit_2(qcli_home, tmp_path, cli):
    path = tmp_path / "bad.toml"
    path.write_text('[cpcv]\nn_groups = "ten"\n')
    code, _, err = cli("backtest", "cpcv", "--config", str(path))
    assert code == 2
    assert f"{path}: [cpcv] n_groups must be an integer, got 'ten'" in err
