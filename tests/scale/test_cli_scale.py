"""`--executor ray`, `--ray-address` and `$QCLI_RAY_ADDRESS` through the real `qcli` commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.features.build import build_features
from quantcli.store.offline import OfflineStore

from .test_missing_ray import BLOCK_RAY

TABLE = "technical_features_v1"


def _home_with_bars(home: Path, build: bool = False) -> None:
    home.mkdir(parents=True, exist_ok=True)
    with OfflineStore(home / "offline.duckdb") as store:
        ingest_frame(synthetic_universe(6, 300, seed=5), store=store, source="synthetic")
        if build:
            build_features(store, shard_rows=600)


def _table_sha256(home: Path, tmp: Path) -> str:
    out = tmp / f"{home.name}.parquet"
    with OfflineStore(home / "offline.duckdb", read_only=True) as store:
        store.con.execute(
            f"COPY (SELECT * FROM {TABLE} ORDER BY symbol, ts) TO '{out}' (FORMAT parquet)"
        )
    return hashlib.sha256(out.read_bytes()).hexdigest()


def _env(home: Path, monkeypatch, **extra: str) -> dict[str, str]:
    """What the subprocess adds to this environment, without the outer $QCLI_RAY_ADDRESS."""
    monkeypatch.delenv("QCLI_RAY_ADDRESS", raising=False)
    return {"QCLI_HOME": str(home), **extra}


def test_without_ray_both_commands_fail_with_the_extra_named(tmp_path, qcli, monkeypatch):
    home = tmp_path / "home"
    _home_with_bars(home, build=True)
    blocker = tmp_path / "noray"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_RAY)
    env = _env(home, monkeypatch, PYTHONPATH=str(blocker))
    expected = [
        "Error: the optional package 'ray' is not installed (needed for --executor ray)",
        'Hint: install it: pip install -e ".[ray]"  (or: pip install "quantcli[ray]")',
    ]
    for args in (("features", "build", "--executor", "ray"), ("backtest", "cpcv", "--executor",
                                                              "ray", "--json")):  # fmt: skip
        out = qcli.subprocess(*args, env=env, timeout=300)
        assert out.code == 2, (args, out.err)
        assert out.err.strip().splitlines() == expected, args
        assert out.out == ""


def test_bad_address_in_the_environment_is_named(qcli_home, qcli, monkeypatch):
    # in-process: the message and exit code come from the same `main`; the real-process cases
    # are the missing-Ray and the second-driver tests
    monkeypatch.setenv("QCLI_RAY_ADDRESS", "x")
    code, _, err = qcli("features", "build", "--executor", "ray")
    assert code == 2
    assert err.splitlines()[0] == "Error: $QCLI_RAY_ADDRESS 'x' is not a Ray address"


def test_cli_build_joins_a_running_cluster_by_address(ray_cluster, tmp_path, qcli, monkeypatch):
    """A second driver (the CLI) joins the session cluster through $QCLI_RAY_ADDRESS."""
    gcs = ray_cluster.get_runtime_context().gcs_address  # HOST:PORT of the running cluster
    local_home, ray_home = tmp_path / "local", tmp_path / "ray"
    _home_with_bars(local_home, build=True)
    _home_with_bars(ray_home)
    env = _env(ray_home, monkeypatch, QCLI_RAY_ADDRESS=gcs)
    out = qcli.subprocess("features", "build", "--executor", "ray", "--json", env=env, timeout=300)
    assert out.code == 0, out.err
    result = out.json
    assert result["executor"] == "ray"
    assert _table_sha256(ray_home, tmp_path) == _table_sha256(local_home, tmp_path)


def test_materialize_on_the_ray_engine_refuses_old_history_and_bad_addresses(
    qcli_home, qcli, monkeypatch
):
    home = qcli_home
    monkeypatch.delenv("QCLI_RAY_ADDRESS", raising=False)
    _home_with_bars(home, build=True)  # synthetic bars of 2000-2001: far older than the TTL
    code, out, err = qcli("features", "materialize", "--executor", "ray", "--json")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("Error: --executor ray: the newest feature row (2001-02-23")
    assert lines[0].endswith("Feast's Ray engine would drop every row and write nothing to the "
                             "online store")  # fmt: skip
    hint = "Hint: materialize historical data with --executor local (same online values)"
    assert lines[1] == hint
    assert out == "" and not (home / "feast").exists()
    # the old spelling still works for one release, with a warning first
    code, out, err = qcli("features", "materialize", "--engine", "ray", "--json")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith("Warning: --engine is deprecated here; use --executor ray")
    assert lines[1].startswith("Error: --executor ray: the newest feature row (2001-02-23")
    code, _, err = qcli(
        "features", "materialize", "--executor", "ray", "--ray-address", "nope", "--json"
    )  # fmt: skip
    assert code == 2
    assert err.splitlines()[0] == "Error: --ray-address 'nope' is not a Ray address"
