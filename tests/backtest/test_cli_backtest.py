"""`qcli backtest cpcv` end to end: real DuckDB store, real features, LightGBM, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SMALL_TOML = "[lightgbm]\nn_estimators = 30\nnum_leaves = 7\nmin_child_samples = 20\n"


def _store(home: Path, n_symbols: int, seed: int, ar1: float, mlflow_db: Path) -> Path:
    """Ingest a synthetic universe and build technical_v1 into ``home`` (a fresh $QCLI_HOME),
    with an empty migrated MLflow store (where the trials go).

    In this process (a fresh interpreter would spend seconds on imports for a fixture)."""
    import shutil

    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.build import build_features

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        ingest_frame(synthetic_universe(n_symbols, 600, seed=seed, ar1=ar1))
        build_features()
    (home / "small.toml").write_text(SMALL_TOML)
    shutil.copyfile(mlflow_db, home / "mlflow.db")
    return home


@pytest.fixture(scope="module")
def signal_home(tmp_path_factory, mlflow_template_db) -> Path:
    return _store(
        tmp_path_factory.mktemp("signal"), 8, seed=3, ar1=0.4, mlflow_db=mlflow_template_db
    )


@pytest.fixture(scope="module")
def noise_home(tmp_path_factory, mlflow_template_db) -> Path:
    return _store(
        tmp_path_factory.mktemp("noise"), 6, seed=5, ar1=0.0, mlflow_db=mlflow_template_db
    )


@pytest.fixture
def cpcv(qcli, monkeypatch):
    """``cpcv(home, *args)``: ``qcli backtest cpcv ARGS`` with ``$QCLI_HOME=home``, in this
    process (the root ``qcli`` runner); ``cpcv.subprocess`` runs a fresh interpreter."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def run(home: Path, *args: str):
        monkeypatch.setenv("QCLI_HOME", str(home))
        return qcli("backtest", "cpcv", *args)

    def in_subprocess(home: Path, *args: str):
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return qcli.subprocess("backtest", "cpcv", *args, env={"QCLI_HOME": str(home)})

    run.subprocess = in_subprocess
    return run


def test_planted_signal_passes_with_report_and_same_bytes_twice(signal_home, cpcv):
    args = ("--config", str(signal_home / "small.toml"), "--n-groups", "6", "--json")
    first = cpcv.subprocess(signal_home, *args)
    assert first.code == 0, first.err
    out = first.json
    assert out["passed"] is True and out["verdict"]["reasons"] == []
    assert out["metrics"]["sharpe"] > 1.2 and out["metrics"]["psr"] > 0.95
    assert out["cv"] == {
        "n_groups": 6,
        "n_test_groups": 2,
        "embargo_pct": 0.01,
        "purge_pct": 0.0,
        "n_splits": 15,
        "n_paths": 5,
    }
    # the default grid: 4 configurations, so PBO is computed and DSR deflates by 4 trials
    assert len(out["paths"]) == 5 and len(out["fold_metrics"]) == 15 * 4
    assert out["metrics"]["n_trials"] == 4 and 0.0 <= out["metrics"]["pbo"] <= 1.0
    assert out["metrics"]["dsr"] < out["metrics"]["psr"]
    assert out["metrics"]["trial_model"] == "technical_v1-fwd_return_5d"
    # net of the default costs, one horizon: rebalanced every 5 bars for the 5-day label
    assert out["strategy"]["return_source"] == "fwd_return_1d"
    assert out["strategy"]["holding_bars"] == out["strategy"]["label_horizon_bars"] == 5
    assert out["strategy"]["costs"]["commission_bps"] == 1.0
    m = out["metrics"]
    assert m["gross_sharpe"] > m["sharpe"] and m["cost_drag_annual"] > 0
    assert m["turnover_annual"] > 0 and m["break_even_cost_bps"] > 5.0
    for p in out["paths"]:
        assert p["gross_sharpe"] > p["sharpe"] and p["turnover_annual"] > 0
    report = Path(out["report"]["dir"])
    assert report.parent == signal_home / "reports" and report.name.startswith("backtest-")
    for name in ("equity.png", "drawdowns.png", "sharpe_distribution.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (report / "report.html").read_text()
    for text in ("net Sharpe", "gross Sharpe", "turnover", "cost drag", "break-even cost"):
        assert text in html
    assert html.count("data:image/png;base64,") == 3
    csv_head = (report / "path_returns.csv").read_text().splitlines()[0]
    assert csv_head.split(",") == ["ts", *[f"path_{p}" for p in range(5)]] + [
        f"gross_{p}" for p in range(5)
    ]
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["metrics"]["sharpe"] == out["metrics"]["sharpe"]
    png = (report / "equity.png").read_bytes()
    metrics_bytes = (report / "metrics.json").read_bytes()

    # the second run in this process: another process state (hash seed, warm imports and
    # caches), same seed and data, so the same bytes; a second interpreter would add seconds
    code, stdout, stderr = cpcv(signal_home, *args)
    assert code == 0, stderr
    assert stdout == first.out  # same seed, same data: the same bytes
    assert (report / "equity.png").read_bytes() == png
    assert (report / "metrics.json").read_bytes() == metrics_bytes


def test_no_edge_fails_the_gate_with_exit_1(noise_home, tmp_path, cpcv):
    code, stdout, stderr = cpcv(
        noise_home,
        "--config",
        str(noise_home / "small.toml"),
        "--n-groups",
        "4",
        "--grid",
        "none",
        "--no-trials",
        "--report-dir",
        str(tmp_path / "bt"),
        "--json",
    )
    assert code == 1, stderr
    out = json.loads(stdout)  # the result still comes out with --json
    assert out["passed"] is False
    assert out["metrics"]["sharpe"] < 1.2
    assert "Error: backtest gates failed" in stderr
    assert "Sharpe ratio" in stderr
    assert (tmp_path / "bt" / "metrics.json").is_file()
    # the same run passes when the thresholds are lowered on the command line
    code, stdout, stderr = cpcv(
        noise_home,
        "--config",
        str(noise_home / "small.toml"),
        "--n-groups",
        "4",
        "--grid",
        "none",
        "--no-trials",
        "--min-sharpe",
        "-5",
        "--min-psr",
        "0",
        "--max-drawdown",
        "-1",
        "--report-dir",
        str(tmp_path / "bt2"),
    )
    assert code == 0, stderr
    assert "PASS" in stdout and "Backtest paths" in stdout
    for text in ("Sharpe net / gross", "turnover", "cost drag", "break-even cost", "net Sharpe"):
        assert text in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--n-groups", "1"), "`n_groups` must be an integer of at least 2, got `n_groups=1`"),
        (("--grid", "huge"), "Invalid value for '--grid'"),
        (("--embargo-pct", "2"), "`embargo_pct` must be a fraction in [0, 1)"),
        (("--label", "fwd_return_9d"), "unknown label 'fwd_return_9d'"),
        (("--max-drawdown", "0.2"), "`max_drawdown` must be a negative fraction"),
        (("--model", "a b;rm"), "invalid model name 'a b;rm' for the trial log"),
        (("--min-sharpe", "nan"), "`min_sharpe` must be a finite number"),
        (("--min-psr", "nan"), "`min_psr` must be a finite number"),
        (("--max-drawdown", "-inf"), "`max_drawdown` must be a finite number"),
    ],
)
def test_bad_input_exits_2_with_one_line(noise_home, args, message, tmp_path, cpcv):
    code, stdout, stderr = cpcv(noise_home, *args, "--report-dir", str(tmp_path / "bt"))
    assert code == 2, stderr
    assert message in stderr
    assert stdout == ""
    assert not (tmp_path / "bt").exists()  # nothing half-written


def test_empty_home_says_what_to_run(tmp_path, cpcv):
    code, _, stderr = cpcv(tmp_path)
    assert code == 2
    assert "Error:" in stderr and "Hint:" in stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[costs]\nslippage = "vwap"\n', "[costs] slippage must be one of fixed, volatility, atr"),
        ("[costs]\ncommission_bps = -1\n", "[costs] commission_bps must be in [0, 1000]"),
        ('[strategy]\nconstruction = "kelly"\n', "[strategy] construction must be one of"),
        ("[strategy]\ntarget_vol = 0\n", "[strategy] target_vol must be in (0, 5]"),
    ],
)
def test_bad_costs_or_strategy_config_exits_2(noise_home, toml, message, tmp_path, cpcv):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    code, stdout, stderr = cpcv(
        noise_home, "--config", str(path), "--report-dir", str(tmp_path / "bt")
    )
    assert (code, stdout) == (2, "")
    assert f"Error: {path}: {message}" in stderr
    assert not (tmp_path / "bt").exists()


def test_atr_slippage_and_rank_from_the_config(noise_home, tmp_path, cpcv):
    """The stored backtest joins the bars' high/low/close for ATR slippage; costs rise with it."""
    path = tmp_path / "atr.toml"
    path.write_text(
        SMALL_TOML + '[costs]\nslippage = "atr"\nslippage_mult = 0.5\n'
        '[strategy]\nconstruction = "rank"\n'
    )
    args = ("--n-groups", "4", "--grid", "none", "--no-trials", "--json")
    code, stdout, stderr = cpcv(
        noise_home, "--config", str(path), "--report-dir", str(tmp_path / "a"), *args
    )  # fmt: skip
    assert code in (0, 1), stderr
    atr = json.loads(stdout)
    assert atr["strategy"]["costs"]["slippage"] == "atr"
    assert atr["strategy"]["construction"]["construction"] == "rank"
    code, stdout, stderr = cpcv(
        noise_home, "--config", str(noise_home / "small.toml"), "--report-dir",
        str(tmp_path / "b"), *args
    )  # fmt: skip
    fixed = json.loads(stdout)
    # half the average true range of a daily bar costs far more than the fixed 2 bps
    assert atr["metrics"]["cost_drag_annual"] > 2 * fixed["metrics"]["cost_drag_annual"]


def test_a_report_dir_that_is_a_file_exits_2_before_any_trial(noise_home, tmp_path, cpcv):
    from quantcli.models.trials import TrialLog
    from quantcli.workspace import Workspace

    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    code, _, stderr = cpcv(noise_home, "--model", "rd", "--report-dir", str(taken))
    assert code == 2, stderr
    assert "--report-dir" in stderr and "is not a directory" in stderr and "Traceback" not in stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(noise_home))
        assert TrialLog(Workspace.from_env()).sharpes("rd") == {}


def test_training_and_cpcv_count_one_configuration_once(signal_home, tmp_path, qcli, cpcv):
    cfg = tmp_path / "none.toml"
    cfg.write_text((signal_home / "small.toml").read_text() + '\n[train]\ngrid = "none"\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(signal_home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        r = qcli("model", "train", "--name", "once", "--config", cfg, "--seed", "7", "--json")
    assert r.code in (0, 1), r.err
    code, stdout, stderr = cpcv(
        signal_home, "--config", cfg, "--model", "once", "--grid", "none", "--seed", "7",
        "--json", "--report-dir", str(tmp_path / "bt"),
    )  # fmt: skip
    assert code in (0, 1), stderr
    assert json.loads(stdout)["metrics"]["n_trials"] == 1
