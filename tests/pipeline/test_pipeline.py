"""`qcli pipeline run` end to end, as a user runs it: a real subprocess, real stores.

One planted-signal universe runs twice from an empty $QCLI_HOME (the second run must be
idempotent: no new bars, no new model version); a noise universe with --strict must exit 1 and
serve from staging. The first planted run is a real process (exit code 0 and JSON as a shell
sees them); the idempotent rerun and the --strict run go through the same ``main`` in-process
(the ``qcli`` fixture), so they do not pay a fresh interpreter's import of Feast, MLflow and
LightGBM again.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import duckdb
import pytest

from quantcli.data.synthetic import synthetic_universe

pytestmark = pytest.mark.slow

# the planted AR(1) signal lives at one bar, so the label (whose horizon is the backtest's
# holding period) is the next bar's return
FAST_CONFIG = """
[label]
name = "fwd_return_1d"

[cpcv]
n_groups = 6
n_test_groups = 2
embargo_pct = 0.01

[lightgbm]
n_estimators = 40
num_leaves = 15
min_child_samples = 20
"""


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """``home`` as $QCLI_HOME of this test and of the processes it starts."""
    monkeypatch.setenv("QCLI_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _bars_csv(tmp_path: Path, ar1: float, seed: int) -> Path:
    path = tmp_path / f"bars_{seed}.csv"
    synthetic_universe(n_symbols=4, n_days=700, seed=seed, ar1=ar1).write_csv(path)
    return path


def _count(home: Path, sql: str) -> int:
    con = duckdb.connect(str(home / "offline.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def _assert_report_embeds_plots(html_path: Path) -> None:
    """The run report is one file: the backtest plots and drift histograms are inside it."""
    html = html_path.read_text()
    for name in ("equity", "drawdowns", "sharpe_distribution"):
        png = html_path.parent / "backtest" / f"{name}.png"
        assert base64.b64encode(png.read_bytes()).decode() in html, name
    drift_pngs = sorted((html_path.parent / "drift").glob("*.png"))
    assert len(drift_pngs) == 6  # DRIFT_PLOTS_IN_RUN_REPORT, worst features first
    for png in drift_pngs:
        assert base64.b64encode(png.read_bytes()).decode() in html, png.name
    assert html.count("data:image/png;base64,") == 1 + 3 + 6  # timings + backtest + drift


# the in-process rerun opens MLflow's SQLAlchemy store, which uses the deprecated `noload` strategy
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
def test_pipeline_planted_signal_promotes_and_reruns_idempotently(tmp_path, qcli, monkeypatch):
    home = tmp_path / "home"
    _use_home(monkeypatch, home)
    cfg = tmp_path / "fast.toml"
    cfg.write_text(FAST_CONFIG)
    bars = _bars_csv(tmp_path, ar1=0.3, seed=11)
    args = ("pipeline", "run", "--input", bars, "--config", cfg, "--name", "planted", "--json")

    first = qcli.subprocess(*args, timeout=900)
    assert first.code == 0, first.err[-3000:]
    out = first.json
    stages = {s["name"]: s for s in out["stages"]}
    assert [s["status"] for s in out["stages"]] == ["ok"] * 10, out["stages"]
    assert stages["train"]["gate"] == "pass", stages["train"]["summary"]
    # the default [train] grid: the configured model and its four variations, PBO over them
    pbo = stages["train"]["details"]["backtest_metrics"]["pbo"]
    assert 0.0 <= pbo <= 1.0
    assert f"PBO {pbo:.2f} over 5 configurations" in stages["train"]["summary"]
    assert stages["export"]["gate"] == "pass"
    assert stages["scan"]["gate"] == "pass", stages["scan"]["summary"]
    assert stages["promote"]["details"]["promoted"] is True
    assert out["served_alias"] == "production"
    assert len(stages["predict"]["details"]["predictions"]) == 4
    _assert_report_embeds_plots(Path(out["report_html"]))
    n_bars = _count(home, "SELECT count(*) FROM bars")
    n_feat = _count(home, "SELECT count(*) FROM technical_features_v1")
    assert n_bars == 4 * 700

    again = qcli(*args)
    assert again.code == 0, again.err[-3000:]
    out2 = again.json
    st2 = {s["name"]: s for s in out2["stages"]}
    assert st2["train"]["details"]["reused"] is True
    assert st2["train"]["details"]["version"] == stages["train"]["details"]["version"]
    assert _count(home, "SELECT count(*) FROM bars") == n_bars
    assert _count(home, "SELECT count(*) FROM technical_features_v1") == n_feat
    # a reused version still brings its backtest plots into the new run's report
    _assert_report_embeds_plots(Path(out2["report_html"]))


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
def test_pipeline_noise_fails_gates_serves_staging_and_strict_exits_1(
    tmp_path, mlflow_template_db, qcli, monkeypatch
):
    home = tmp_path / "home"
    # an empty registry copied from the session's migrated template: the run from a truly empty
    # home (MLflow's migrations) is the planted test's; this one is about the gates
    home.mkdir()
    shutil.copy(mlflow_template_db, home / "mlflow.db")
    cfg = tmp_path / "fast.toml"
    cfg.write_text(FAST_CONFIG + '\n[train]\ngrid = "none"\n')
    bars = _bars_csv(tmp_path, ar1=0.0, seed=12)

    # in-process: exit 1 comes from the same `main` and error handler a shell runs (the planted
    # test is the real-process run)
    _use_home(monkeypatch, home)
    run = qcli(
        "pipeline", "run", "--input", bars, "--config", cfg, "--name", "noise", "--strict", "--json"
    )
    assert run.code == 1, run.err[-3000:]
    # the one gate rule: the failed gates are the error's reasons, the JSON is the run's
    assert "gates did not all pass" in run.err and "gate train: fail" in run.err
    out = run.json
    assert [s["status"] for s in out["stages"]] == ["ok"] * 10
    stages = {s["name"]: s for s in out["stages"]}
    assert stages["train"]["gate"] == "fail"
    assert "PBO n/a: one configuration tried (grid none)" in stages["train"]["summary"]
    assert stages["promote"]["details"]["promoted"] is False
    assert out["served_alias"] == "staging"
    assert "STAGING" in stages["predict"]["summary"]


def test_a_run_cut_short_has_not_passed_its_gates():
    # no gate judged (ingest failed) is not "all gates passed": the model is not in production
    from quantcli.pipeline.run import PipelineResult
    from quantcli.pipeline.stages import StageResult

    stages = [
        StageResult("ingest", "Ingest and validate bars", status="failed", error="bad file"),
        StageResult("features", "Build features", status="skipped"),
    ]
    cut = PipelineResult("r", stages, "m", Path("."), gates={})
    assert not cut.ok and not cut.gates_passed and cut.to_dict()["gates_passed"] is False
    done = [StageResult("train", "Train", status="ok", gate="pass")]
    assert PipelineResult("r", done, "m", Path("."), gates={"train": "pass"}).gates_passed
    failed_gate = PipelineResult("r", done, "m", Path("."), gates={"train": "fail"})
    assert not failed_gate.gates_passed
    # gates are reported, not enforced, unless the run is strict
    assert failed_gate.passed and failed_gate.to_dict()["gates_passed"] is False
    strict = PipelineResult("r", done, "m", Path("."), gates={"train": "fail"}, strict=True)
    assert not strict.passed and strict.reasons == ("gate train: fail",)
    assert not cut.passed and cut.reasons == ("Ingest and validate bars failed: bad file",)
    assert set(cut.to_dict()) == {
        "run_id", "ok", "gates_passed", "gates", "model_name", "served_alias", "report_dir",
        "report_html", "quantcli_version", "stages",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample", "--name", "../../x"], "invalid model name `--name '../../x'`"),
        (["--input", "missing.csv"], "--input missing.csv: no such file"),
    ],
)
def test_bad_input_exits_2_before_any_stage_writes(qcli_home, qcli, args, message):
    """A stage's own InputError is a failed stage (exit 1, after the stages before it wrote):
    what can be checked up front is, so bad input is exit 2 and the state directory stays empty."""
    code, out, err = qcli("pipeline", "run", *args)
    assert code == 2 and out == ""
    assert message in err
    assert list(qcli_home.iterdir()) == []
