"""`load_config`: the embedded defaults, TOML overrides, and values of the wrong type refused."""

from __future__ import annotations

import numpy as np
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


def test_cli_reports_a_wrongly_typed_value_with_exit_2(qcli_home, tmp_path, qcli):
    path = tmp_path / "bad.toml"
    path.write_text('[cpcv]\nn_groups = "ten"\n')
    code, _, err = qcli("backtest", "cpcv", "--config", str(path))
    assert code == 2
    assert f"{path}: [cpcv] n_groups must be an integer, got 'ten'" in err


# One failing and one passing value per range rule: (section, key, bad, range text, good).
RANGE_CASES = [
    ("data", "future_days", -1, "in [0, 36500]", 0),
    ("data", "future_days", float("nan"), "in [0, 36500]", 30.0),
    ("cpcv", "n_groups", 1, ">= 2", 3),  # 2 leaves no room for the default n_test_groups=2
    ("cpcv", "n_test_groups", 10, "in [1, n_groups) = [1, 10)", 9),
    ("cpcv", "n_test_groups", 0, "in [1, n_groups) = [1, 10)", 1),
    ("cpcv", "embargo_pct", 1.0, "in [0, 1)", 0.0),
    ("cpcv", "purge_pct", -0.01, "in [0, 1)", 0.5),
    ("gates", "min_sharpe", float("nan"), "a finite number", -3.0),
    ("gates", "min_psr", 1.01, "in [0, 1]", 1.0),
    ("gates", "max_drawdown", 0.1, "in [-1, 0]", 0),
    ("gates", "max_drawdown", -1.5, "in [-1, 0]", -1),
    ("costs", "commission_bps", -1, "in [0, 1000]", 0.5),
    ("costs", "half_spread_bps", 1e4, "in [0, 1000]", 5),
    ("costs", "slippage_bps", float("nan"), "in [0, 1000]", 0),
    ("costs", "slippage_mult", -0.1, "in [0, 10]", 0.1),
    ("costs", "slippage_window", 1, ">= 2", 20),
    ("costs", "borrow_bps_per_year", -5, "in [0, 10000]", 300),
    ("strategy", "target_vol", 0.0, "in (0, 5]", 0.15),
    ("strategy", "vol_window", 1, ">= 2", 20),
    ("strategy", "max_leverage", 0, "in (0, 100]", 1),
    ("parity", "fp32_max_loss_pct", 0.0, "in (0, 100]", 0.01),
    ("parity", "fp32_max_loss_pct", 1e308, "in (0, 100]", 100),
    ("parity", "int8_max_loss_pct", -1, "in (0, 100]", 5),
    ("drift", "psi_threshold", 0, "> 0", 2.5),
    ("drift", "psi_threshold", float("inf"), "> 0", 0.25),
    ("drift", "ks_threshold", 1.5, "in (0, 1]", 1.0),
    ("drift", "ks_threshold", 0.0, "in (0, 1]", 0.01),
    ("drift", "jsd_threshold", 2, "in (0, 1]", 0.2),
    ("monitor", "window_size", 1, ">= 2", 2),
    ("monitor", "window_size", -5, ">= 2", 50),
    ("monitor", "min_sharpe", float("-inf"), "a finite number", -0.5),
    ("monitor", "max_drawdown", 0.0, "in [-1, 0)", -0.01),
    ("monitor", "max_drawdown", -1.01, "in [-1, 0)", -1.0),
    ("retrain", "schedule_days", 0, ">= 1", 1),
    ("retrain", "min_samples", -10, ">= 1", 1),
    ("retrain", "drift_threshold", 0, ">= 1", 1),
    ("shadow", "max_pnl_divergence", 0.0, "> 0", 0.2),
    ("mlp", "alpha", -1e-3, ">= 0", 0.0),
    ("mlp", "learning_rate_init", 0.0, "> 0", 0.01),
    ("mlp", "max_iter", 0, ">= 1", 1),
    ("mlp", "validation_fraction", 1.0, "in (0, 1)", 0.2),
    ("mlp", "n_iter_no_change", 0, ">= 1", 5),
]


def _toml(section: str, key: str, value: float) -> str:
    text = {float("inf"): "inf", float("-inf"): "-inf"}.get(value, repr(value))
    return f"[{section}]\n{key} = {'nan' if value != value else text}\n"


@pytest.mark.parametrize(("section", "key", "bad", "allowed", "good"), RANGE_CASES)
def test_each_range_rule_refuses_out_of_range_and_accepts_in_range(
    tmp_path, section, key, bad, allowed, good
):
    path = tmp_path / "c.toml"
    path.write_text(_toml(section, key, bad))
    with pytest.raises(InputError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: [{section}] {key} must be {allowed}, got {bad!r}"
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)

    path.write_text(_toml(section, key, good))
    assert load_config(path)[section][key] == good


def test_every_range_rule_has_cases_and_the_defaults_are_in_range():
    from quantcli.config import RANGES

    assert {(s, k) for s, k, *_ in RANGE_CASES} == set(RANGES)
    for (section, key), rule in RANGES.items():
        assert key in DEFAULTS[section]
        assert rule.contains(float(DEFAULTS[section][key]), DEFAULTS[section]), (section, key)


def test_a_cross_key_bound_uses_the_merged_value(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[cpcv]\nn_groups = 2\n")  # the default n_test_groups = 2 no longer fits
    with pytest.raises(InputError, match=r"\[cpcv\] n_test_groups must be in \[1, n_groups\) = "):
        load_config(path)
    path.write_text("[cpcv]\nn_groups = 6\nn_test_groups = 5\n")
    assert load_config(path)["cpcv"] == {**DEFAULTS["cpcv"], "n_groups": 6, "n_test_groups": 5}


def _domain_check(section: str, key: str, value: float):
    """Run the code that uses ``[section] key`` with ``value``; returns what it built (raises if
    it refuses the value)."""
    cfg = {s: dict(v) for s, v in DEFAULTS.items()}
    cfg[section][key] = value
    if section == "cpcv":
        from quantcli.backtest.cpcv import CombinatorialPurgedCV

        return CombinatorialPurgedCV(**cfg["cpcv"])
    if section == "gates":
        from quantcli.backtest.gates import BacktestValidator

        return BacktestValidator(**cfg["gates"])
    if section == "costs":
        from quantcli.backtest.costs import CostModel

        return CostModel.from_config(cfg["costs"])
    if section == "strategy":
        from quantcli.backtest.portfolio import Construction

        return Construction.from_config(cfg["strategy"])
    if section == "drift":
        from quantcli.monitoring.drift import DriftDetector

        return DriftDetector(**cfg["drift"])
    if section == "monitor":
        from quantcli.monitoring.performance import PerformanceMonitor

        return PerformanceMonitor(**cfg["monitor"])
    if section == "retrain":
        from quantcli.monitoring.retrain import RetrainingTrigger

        return RetrainingTrigger(**cfg["retrain"])
    if section == "data":
        from quantcli.data.window import TimestampWindow

        return TimestampWindow.from_config(cfg["data"])
    if section == "parity":
        from quantcli.serving.parity import ONNXParityTester

        return ONNXParityTester(max_loss_pct=cfg["parity"][key])
    if section == "shadow":
        from quantcli.monitoring.shadow import shadow_compare

        rows = np.arange(4.0)
        return shadow_compare(rows, rows, rows, rows / 100, **cfg["shadow"])
    if section == "mlp":
        from quantcli.models.estimators import make_model

        mlp = make_model("mlp", cfg["mlp"], seed=0).named_steps["mlp"]
        mlp._validate_params()  # sklearn's own parameter constraints
        return mlp
    raise AssertionError(f"no class checks [{section}]: add it here")


@pytest.mark.parametrize(("section", "key", "bad", "allowed", "good"), RANGE_CASES)
def test_a_value_the_config_accepts_the_class_using_it_accepts_too(
    section, key, bad, allowed, good
):
    """The table is at least as strict as the classes: a config that loads never fails later,
    deep inside a run, on a range the class checks again for Python callers."""
    assert _domain_check(section, key, good) is not None


def test_cli_reports_an_out_of_range_value_with_exit_2(qcli_home, tmp_path, qcli):
    path = tmp_path / "bad.toml"
    path.write_text("[cpcv]\nembargo_pct = 1.5\n")
    code, out, err = qcli("backtest", "cpcv", "--config", str(path))
    assert (code, out) == (2, "")
    assert f"Error: {path}: [cpcv] embargo_pct must be in [0, 1), got 1.5" in err
    assert "Hint: a fraction of the timestamps, not percent (0.01 means 1 %)" in err


def test_the_configuration_doc_lists_every_rule_with_its_default_and_range():
    import re
    from pathlib import Path

    from quantcli.config import RANGES

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    rows, section = {}, None
    for line in doc.splitlines():
        m = re.match(r"\| (`\[(\w+)\]`)? *\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", line)
        if m:
            section = m.group(2) or section
            rows[(section, m.group(3))] = (m.group(4).strip(), m.group(5).strip())
    assert set(rows) == set(RANGES)
    for (section, key), rule in RANGES.items():
        assert rows[(section, key)] == (str(DEFAULTS[section][key]), rule.describe()), (
            section,
            key,
        )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "hidden_layer_sizes = [64, 0]",
            "[mlp] MLP parameter hidden_layer_sizes must be a non-empty list of integers >= 1, "
            "got [64, 0]",
        ),
        (
            "hidden_layer_sizes = []",
            "[mlp] MLP parameter hidden_layer_sizes must be a non-empty list of integers >= 1, "
            "got []",
        ),
        (
            'activation = "gelu"',
            "[mlp] MLP parameter activation must be one of identity, logistic, tanh, relu, "
            "got 'gelu'",
        ),
    ],
)
def test_mlp_list_and_choice_keys_are_checked_at_load(tmp_path, line, message):
    path = tmp_path / "c.toml"
    path.write_text(f"[mlp]\n{line}\n")
    with pytest.raises(InputError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: {message}"
    path.write_text("[mlp]\nhidden_layer_sizes = [512, 256]\n")
    assert load_config(path)["mlp"]["hidden_layer_sizes"] == [512, 256]
