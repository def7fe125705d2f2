"""Tracking URIs a command cannot use are refused with one line (exit 2), before MLflow is asked."""

from __future__ import annotations

import re
import socket

import pytest

from quantcli.errors import InputError
from quantcli.models.registry import ModelRegistry


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bogus://x", "--tracking-uri 'bogus://x': unsupported scheme bogus:"),
        ("sqlite:////nonexistent-qcli/x.db", "directory /nonexistent-qcli does not exist"),
        (None, "cannot reach the MLflow tracking server at http://127.0.0.1:"),
    ],
)
def test_an_unusable_tracking_uri_is_refused_before_mlflow_runs(qcli_home, uri, message):
    """An unknown scheme crashed MLflow's client, a SQLite path into a missing directory
    created an empty registry there, and a server that is down cost 15 s of retries and a
    traceback."""
    uri = uri or f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(InputError, match=re.escape(message)):
        ModelRegistry(tracking_uri=uri)
    assert not (qcli_home / "mlflow.db").exists()


def test_the_cli_exits_2_naming_the_server(qcli_home, qcli, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    code, out, err = qcli("model", "list")
    assert code == 2 and out == ""
    assert "cannot reach the MLflow tracking server" in err
