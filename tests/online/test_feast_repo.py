"""$QCLI_HOME/feast is a real Feast repo: feature_store.yaml plus generated definitions, and the
`feast` CLI lists, materializes and serves from it what quantcli materialized."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from online._features import feature_frame, latest_rows, write_feature_table
from quantcli.online import (
    REDIS_PASSWORD_ENV,
    definitions_module,
    feast_objects,
    load_declaration,
    materialize,
    write_repo,
)

pytestmark = [
    pytest.mark.integration,
    # Feast's DuckDB offline store (through ibis) calls duckdb's deprecated fetch_arrow_table
    pytest.mark.filterwarnings(r"ignore:fetch_arrow_table\(\) is deprecated:DeprecationWarning"),
]

VIEW = "technical_features_v1"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A materialized store (3 symbols x 60 days of stand-in features) and its Feast repo."""
    home = tmp_path_factory.mktemp("qcli_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        frame = feature_frame(n_symbols=3, n_days=60)
        write_feature_table(frame)
        result = materialize("technical_v1")
        yield SimpleNamespace(home=home, path=home / "feast", frame=frame, result=result)


def _feast(repo, *args: str):
    """The `feast` CLI in-process (its import is paid once); the exit code and the output."""
    from click.testing import CliRunner
    from feast.cli.cli import cli

    res = CliRunner().invoke(cli, ["-c", str(repo.path), *args])
    assert res.exit_code == 0, (args, res.output, res.exception)
    return res.output


def test_feature_store_yaml_matches_what_quantcli_applies(repo):
    assert repo.result["repo"] == str(repo.path)
    spec = yaml.safe_load((repo.path / "feature_store.yaml").read_text())
    assert spec == {
        "project": "quantcli",
        "registry": str(repo.path / "registry.db"),
        "provider": "local",
        "online_store": {"type": "sqlite", "path": str(repo.path / "online_store.db")},
        "offline_store": {"type": "duckdb"},
        "batch_engine": {"type": "local"},
        "entity_key_serialization_version": 3,
    }


def test_a_repo_written_by_an_older_layout_is_upgraded_by_the_next_materialize(repo):
    """Files an older quantcli left (an engine named by a class path that no longer exists,
    definitions importing a removed module) are rewritten: the repo works again."""
    yaml_path = repo.path / "feature_store.yaml"
    defs = repo.path / definitions_module(load_declaration("technical_v1"))
    want_yaml, want_defs = yaml_path.read_text(), defs.read_text()
    old_engine = "batch_engine:\n  type: local"
    assert old_engine in want_yaml
    yaml_path.write_text(
        want_yaml.replace(old_engine, "batch_engine:\n  type: quantcli.scale.feast_engine.Ray")
    )
    defs.write_text("from quantcli.store.feast_store import feast_objects\n")
    result = materialize("technical_v1")
    assert result.incremental is True  # the state file is kept: only the generated files change
    assert yaml_path.read_text() == want_yaml
    assert defs.read_text() == want_defs
    assert VIEW in _feast(repo, "feature-views", "list")  # Feast loads the upgraded repo


def test_definitions_are_generated_from_the_declaration(repo, monkeypatch):
    decl = load_declaration("technical_v1")
    monkeypatch.syspath_prepend(str(repo.path))  # Feast imports the repo's modules like this
    path = repo.path / definitions_module(decl)
    spec = importlib.util.spec_from_file_location("qcli_generated_defs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entity, view = feast_objects(decl)
    assert module.feature_view == view
    assert module.symbol == entity
    assert sorted(f.name for f in module.feature_view.schema) == sorted(decl.feature_names)
    sys.modules.pop("entities", None)


def test_feast_cli_lists_materializes_and_reads_the_repo(repo):
    listed = _feast(repo, "feature-views", "list")
    assert VIEW in listed and "AVAILABLE_ONLINE" in listed

    # Feast's own materialization over the whole table, then its own online read
    start = repo.frame["ts"].min().isoformat()
    end = repo.frame["ts"].max().isoformat()
    _feast(repo, "materialize", start, end, "--views", VIEW)
    latest = latest_rows(repo.frame)
    names = ["nma_9", "rsi_14"]
    args = [arg for n in names for arg in ("-f", f"{VIEW}:{n}")]
    args += [arg for s in latest["symbol"] for arg in ("-e", f"symbol={s}")]
    # the real console script, once: what a user types
    proc = subprocess.run(
        ["feast", "-c", str(repo.path), "get-online-features", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert got["symbol"] == latest["symbol"].to_list()
    for n in names:
        np.testing.assert_array_equal(got[n], latest[n].to_numpy())


def test_feast_output_has_no_colour_codes_off_a_terminal(repo, qcli, monkeypatch):
    monkeypatch.setenv("QCLI_HOME", str(repo.home))
    code, _, err = qcli("features", "materialize", "--full")
    assert code == 0, err
    assert "Materializing" in err and VIEW in err
    assert "\x1b[" not in err


def test_redis_password_is_not_written_to_the_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("QCLI_HOME", str(tmp_path))
    decl = load_declaration("technical_v1")
    repo = write_repo(decl, "redis", "redis://:s3cret@127.0.0.1:6399/2", "ray")
    text = (repo / "feature_store.yaml").read_text()
    assert "s3cret" not in text
    from feast.repo_config import load_repo_config

    monkeypatch.setenv(REDIS_PASSWORD_ENV, "s3cret")
    cfg = load_repo_config(repo, repo / "feature_store.yaml")
    assert cfg.online_store.connection_string == "127.0.0.1:6399,db=2,password=s3cret"
    assert cfg.batch_engine_config["type"] == "ray.engine"


def test_feast_ui_opens_the_repo(repo, tmp_path):
    """`feast -c $QCLI_HOME/feast ui` (as docs/online.md shows) serves the quantcli project."""
    import os
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen(
        ["feast", "-c", str(repo.path), "ui", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                url = f"http://127.0.0.1:{port}/projects-list.json"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    projects = json.loads(resp.read())["projects"]
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "feast ui did not start in 240 s"
            time.sleep(0.5)
        assert [p["id"] for p in projects] == ["quantcli"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
