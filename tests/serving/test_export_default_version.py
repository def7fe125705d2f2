"""`qcli model export|scan NAME` without --version: the @staging version, else the latest.

On a real embedded MLflow registry and offline store (the fixtures of test_cli_export).
"""

from __future__ import annotations

import pytest

# the helpers of the export CLI tests (their `home` fixture is in tests/serving/conftest.py)
from tests.serving.test_cli_export import run_json

pytestmark = pytest.mark.integration


@pytest.mark.usefixtures("home")
def test_export_defaults_to_staging_then_latest(qcli, register_model):
    from quantcli.models.registry import ModelRegistry

    assert (register_model("dflt").version, register_model("dflt").version) == ("1", "2")
    reg = ModelRegistry()
    reg.client.set_registered_model_alias("dflt", "staging", "1")  # the candidate is not latest
    args = ("model", "export", "dflt", "--sample-rows", "200", "--no-benchmark")

    code, res = run_json(qcli, *args)
    assert code == 0, res
    assert (res["version"], res["version_source"]) == ("1", "@staging")
    assert reg.resolve("dflt", "1").verdicts.get("parity") == "pass"
    assert "parity" not in reg.resolve("dflt", "2").verdicts

    reg.client.delete_registered_model_alias("dflt", "staging")
    code, res = run_json(qcli, *args)
    assert code == 0, res
    assert (res["version"], res["version_source"]) == ("2", "latest")

    code, res = run_json(qcli, *args, "--version", "1")
    assert (code, res["version"], res["version_source"]) == (0, "1", "--version")

    # scan follows the same rule, so promote finds both verdicts on the staged version
    reg.client.set_registered_model_alias("dflt", "staging", "1")
    code, res = run_json(qcli, "model", "scan", "dflt", "--sample-rows", "200")
    assert code == 0, res
    assert (res["version"], res["version_source"]) == ("1", "@staging")
    assert reg.resolve("dflt", "1").verdicts.get("scan") == "pass"
    assert "scan" not in reg.resolve("dflt", "2").verdicts


@pytest.mark.usefixtures("home")
def test_human_output_says_which_version_it_chose(qcli, register_model):
    register_model("said")
    code, _, err = qcli("model", "export", "said", "--sample-rows", "200", "--no-benchmark")
    assert code == 0, err
    assert "exporting said v1 (the version behind the @staging alias)" in err
