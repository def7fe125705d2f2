"""`qcli model train | validate | promote | rollback | list` on a real store; racing promotes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantcli.models.events import list_events
from quantcli.models.lifecycle import validate_version
from quantcli.models.registry import ModelRegistry
from quantcli.store.offline import OfflineStore

pytestmark = [
    # MLflow's SQLAlchemy store uses the deprecated `noload` loader strategy (SQLAlchemy 2.x warns)
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
]

SMALL_TOML = """
[cpcv]
n_groups = 6
n_test_groups = 2

[lightgbm]
n_estimators = 20
num_leaves = 7
min_child_samples = 20

[registry]
required_verdicts = ["backtest"]

# one configuration: the training grid is tested in test_trainer.py and the pipeline test
[train]
grid = "none"
"""


def _build_store(home: Path, n_symbols: int, seed: int, ar1: float) -> Path:
    from quantcli.data.ingest import ingest_frame
    from quantcli.data.synthetic import synthetic_universe
    from quantcli.features.build import build_features

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        ingest_frame(synthetic_universe(n_symbols, 600, seed=seed, ar1=ar1))
        build_features()
    (home / "small.toml").write_text(SMALL_TOML)
    return home


@pytest.fixture(scope="module")
def signal_store(tmp_path_factory) -> Path:
    return _build_store(tmp_path_factory.mktemp("signal_store"), 8, seed=3, ar1=0.4)


@pytest.fixture(scope="module")
def noise_store(tmp_path_factory) -> Path:
    return _build_store(tmp_path_factory.mktemp("noise_store"), 6, seed=4, ar1=0.0)


def _home_from(store: Path, qcli_home: Path, template: Path) -> Path:
    shutil.copy(store / "offline.duckdb", qcli_home / "offline.duckdb")
    shutil.copy(store / "small.toml", qcli_home / "small.toml")
    shutil.copy(template, qcli_home / "mlflow.db")
    return qcli_home


PASSED = {"backtest": "pass", "parity": "pass", "scan": "pass"}


def _onnx_gates_pass(name: str, version: str) -> None:
    """What `qcli model export` and `qcli model scan` record (the config cannot drop them)."""
    reg = ModelRegistry()
    for gate in ("parity", "scan"):
        reg.record_verdict(name, version, gate, True, [])


def test_cli_flow_on_the_store(qcli, qcli_home, mlflow_template_db, signal_store):
    home = _home_from(signal_store, qcli_home, mlflow_template_db)
    cfg = str(home / "small.toml")

    r = qcli("model", "train", "--name", "sig", "--config", cfg, "--json")
    assert r.code == 0, r.err
    out = r.json
    assert (out["version"], out["aliases"], out["backtest_verdict"]) == ("1", ["staging"], "pass")
    assert out["dataset"]["rows"] > 2000 and len(out["dataset"]["sha256"]) == 64

    # the default gates also require parity and scan: refused, exit 1, JSON result on stdout
    r = qcli("model", "promote", "sig", "--json")
    assert r.code == 1
    assert r.json["promoted"] is False
    assert [reason.split(" (")[0] for reason in r.json["reasons"]] == [
        f"verdict '{gate}' not recorded" for gate in ("backtest", "parity", "scan")
    ]
    assert "promotion of sig v1 refused" in r.err

    _onnx_gates_pass("sig", "1")
    r = qcli("model", "validate", "sig", "--config", cfg, "--json")
    assert (r.code, r.json["passed"], r.json["verdicts"]) == (0, True, PASSED)
    r = qcli("model", "promote", "sig", "--config", cfg, "--json")
    assert (r.code, r.json["promoted"], r.json["previous_version"]) == (0, True, None)

    r = qcli("model", "train", "--name", "sig", "--seed", "7", "--config", cfg, "--json")
    assert r.code == 0, r.err
    _onnx_gates_pass("sig", "2")
    assert qcli("model", "validate", "sig", "--config", cfg).code == 0
    r = qcli("model", "promote", "sig", "--config", cfg, "--json")
    assert (r.code, r.json["version"], r.json["previous_version"]) == (0, "2", "1")

    r = qcli("model", "rollback", "sig", "--reason", "drill", "--json")
    assert (r.code, r.json["from_version"], r.json["to_version"]) == (0, "2", "1")
    r = qcli("model", "rollback", "sig", "--json")
    assert r.code == 2 and "no previous production version" in r.err

    r = qcli("model", "list", "sig", "--json")
    assert r.code == 0
    out = r.json
    assert out["aliases"] == {"production": "1", "staging": "2"}
    assert [(v["version"], v["status"]) for v in out["versions"]] == [
        ("1", "production"),
        ("2", "rolled_back"),
    ]
    assert all(v["verdicts"] == PASSED for v in out["versions"])
    assert all(v["feature_set_version"] == "1" for v in out["versions"])
    assert out["versions"][0]["dataset_sha256"] == out["versions"][1]["dataset_sha256"]

    human = qcli("model", "list", "sig")
    assert "sig: versions" in human.out and "version" in human.out  # a rich table, not JSON
    assert "production history (oldest first): ['2']" not in human.err
    assert "production history (oldest first): none" in human.err

    with OfflineStore(read_only=True) as store:
        events = [(e["action"], e["to_version"], e["reason"]) for e in list_events(store, "sig")]
    assert events == [
        ("promote", "1", "all required gates passed"),
        ("promote", "2", "all required gates passed"),
        ("rollback", "1", "drill"),
    ]


def test_cli_noise_is_refused_and_override_is_recorded(
    qcli, qcli_home, mlflow_template_db, noise_store
):
    home = _home_from(noise_store, qcli_home, mlflow_template_db)
    cfg = str(home / "small.toml")
    r = qcli("model", "train", "--name", "noise", "--config", cfg, "--json")
    assert r.code == 0, r.err  # training succeeds; the verdict is recorded, not enforced here
    assert r.json["backtest_verdict"] == "fail" and r.json["reasons"]

    r = qcli("model", "validate", "noise", "--config", cfg, "--json")
    assert r.code == 1 and r.json["passed"] is False
    r = qcli("model", "promote", "noise", "--config", cfg)
    assert r.code == 1 and "verdict 'backtest' is fail: Sharpe ratio" in r.err
    assert ModelRegistry().alias_version("noise", "production") is None

    r = qcli("model", "promote", "noise", "--force", "--config", cfg)
    assert r.code == 2 and "--force needs --reason" in r.err
    r = qcli(
        "model", "promote", "noise", "--force", "--reason", "desk test", "--json", "--config", cfg
    )
    assert r.code == 0 and r.json["forced"] is True and r.json["event"]["action"] == "override"


def test_cli_usage_errors_exit_2(qcli, qcli_home, embedded_uri):
    r = qcli("model", "train", "--name", "bad name")
    assert r.code == 2 and "invalid model name" in r.err
    r = qcli("model", "list", "nothing_here")
    assert r.code == 2 and "no registered model 'nothing_here'" in r.err
    r = qcli("model", "train", "--name", "x", "--family", "svm")
    assert r.code == 2 and "'svm' is not one of 'lgbm', 'mlp', 'ensemble'" in r.err


def test_concurrent_promotes_leave_one_consistent_production(
    qcli_home, embedded_uri, helpers, register_model
):
    reg = ModelRegistry(embedded_uri)
    name = "race"
    for seed in (1, 2, 3):
        v = register_model(name, tracking_uri=reg.tracking_uri, **helpers.tiny(seed=seed)).version
        _onnx_gates_pass(name, v)
        validate_version(reg, name, v)  # the backtest verdict signed at registration
    reg.promote(name, 1)
    cfg = qcli_home / "race.toml"
    cfg.write_text('[registry]\nrequired_verdicts = ["backtest"]\n')

    # Each child imports everything and opens the registry first, then waits for one "go" file,
    # so both promotes reach the registry at the same instant (import time would serialise them).
    go = qcli_home / "go"
    child = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from quantcli.cli import main\n"
        "from quantcli.models.registry import ModelRegistry\n"
        f"ModelRegistry().alias_map({name!r})\n"
        "Path(os.environ['READY_FILE']).touch()\n"
        f"while not Path({str(go)!r}).exists():\n"
        "    time.sleep(0.002)\n"
        "main(sys.argv[1:])\n"
    )
    procs = []
    for v in ("2", "3"):
        env = {**os.environ, "QCLI_HOME": str(qcli_home), "READY_FILE": str(qcli_home / v)}
        args = ["model", "promote", name, "--version", v, "--config", str(cfg), "--json"]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", child, *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 240
    while not all((qcli_home / v).exists() for v in ("2", "3")):
        assert time.monotonic() < deadline, "promote processes did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]

    reg = ModelRegistry(embedded_uri)
    production = reg.alias_version(name, "production")
    assert production in ("2", "3")
    other = "3" if production == "2" else "2"
    # serialised: 1 -> other -> production, and the history remembers both predecessors
    assert reg.production_history(name) == ["1", other]
    statuses = {v.version: v.status for v in reg.list_versions(name)}
    assert statuses == {"1": "archived", other: "archived", production: "production"}
    with OfflineStore(read_only=True) as store:
        chain = [(e["from_version"], e["to_version"]) for e in list_events(store, name)]
    assert chain == [(None, "1"), ("1", other), (other, production)]
    results = [json.loads(o[0]) for o in outs]
    assert sorted(r["previous_version"] for r in results) == sorted(["1", other])
