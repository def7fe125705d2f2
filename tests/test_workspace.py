"""Workspace: where one run's state lives, resolved once at the edge and passed down."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from quantcli import Workspace
from quantcli.config import DEFAULTS
from quantcli.errors import InputError, NotFoundError


def test_from_env_reads_qcli_home_and_tracking_uri_once_at_creation(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    monkeypatch.setenv("QCLI_HOME", str(first))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    ws = Workspace.from_env()
    monkeypatch.setenv("QCLI_HOME", str(second))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    # the environment changed after creation: the workspace keeps what it saw
    assert ws.home == first.resolve()
    assert ws.tracking_uri == "http://127.0.0.1:5999"
    assert ws.offline_path == first.resolve() / "offline.duckdb"
    later = Workspace.from_env()
    assert later.home == second.resolve()
    assert later.tracking_uri == f"sqlite:///{second.resolve() / 'mlflow.db'}"


def test_from_env_defaults_to_dot_qcli_and_an_explicit_uri_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QCLI_HOME", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    ws = Workspace.from_env(tracking_uri="sqlite:///elsewhere.db")
    assert ws.home == (tmp_path / ".qcli").resolve()
    assert ws.tracking_uri == "sqlite:///elsewhere.db"
    assert ws.config_path is None


def test_at_roots_every_location_at_home(tmp_path, monkeypatch):
    monkeypatch.setenv("QCLI_HOME", str(tmp_path / "ignored"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    ws = Workspace.at(tmp_path / "desk")
    home = (tmp_path / "desk").resolve()
    assert ws.home == home
    assert ws.tracking_uri == f"sqlite:///{home / 'mlflow.db'}"  # not the environment's
    assert (ws.offline_path, ws.artifacts_dir, ws.feast_repo) == (
        home / "offline.duckdb",
        home / "mlartifacts",
        home / "feast",
    )
    assert (ws.keys_dir, ws.audit_dir, ws.ledger_path) == (
        home / "keys",
        home / "audit",
        home / "audit" / "ledger.jsonl",
    )
    assert (ws.reports_dir, ws.locks_dir, ws.feature_defs_dir) == (
        home / "reports",
        home / "locks",
        home / "feature_defs",
    )
    assert Workspace.at(tmp_path, tracking_uri="http://h:1").tracking_uri == "http://h:1"


def test_a_workspace_is_frozen(tmp_path):
    ws = Workspace.at(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ws.home = Path("/")  # type: ignore[misc]


def test_config_is_validated_once_then_cached(tmp_path):
    cfg = tmp_path / "desk.toml"
    cfg.write_text("[gates]\nmin_sharpe = 0.5\n")
    ws = Workspace.at(tmp_path, config=cfg)
    assert ws.config["gates"]["min_sharpe"] == 0.5
    assert ws.config["cpcv"] == DEFAULTS["cpcv"]
    # a later edit of the file does not change a workspace already resolved ...
    cfg.write_text("[gates]\nmin_sharpe = 'high'\n")
    assert ws.config["gates"]["min_sharpe"] == 0.5
    # ... and section() hands out copies
    section = ws.section("gates")
    section["min_sharpe"] = 9.0
    assert ws.config["gates"]["min_sharpe"] == 0.5
    # a new workspace validates the file it finds now, naming it
    with pytest.raises(InputError, match=r"desk\.toml.*min_sharpe must be a number"):
        _ = Workspace.at(tmp_path, config=cfg).config


def test_default_config_is_the_embedded_defaults(tmp_path):
    assert Workspace.at(tmp_path).config == DEFAULTS


def test_offline_store_opens_at_offline_path(tmp_path):
    ws = Workspace.at(tmp_path / "home")
    with pytest.raises(NotFoundError, match="no offline store"):  # read-only needs a store
        ws.offline(read_only=True)
    with ws.offline() as store:
        assert store.path == ws.offline_path
        store.con.execute("CREATE TABLE marker AS SELECT 42 AS answer")
    assert ws.offline_path.is_file()
    with ws.offline(read_only=True) as store:
        assert store.read_only
        assert store.con.execute("SELECT answer FROM marker").fetchall() == [(42,)]
