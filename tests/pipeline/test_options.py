"""`qcli pipeline run`'s bad input exits 2 before any stage runs (nothing is written)."""

from __future__ import annotations

import pytest

from quantcli.errors import InputError
from quantcli.pipeline.run import run_pipeline
from quantcli.workspace import Workspace


@pytest.mark.parametrize("args", [[], ["--sample", "--input", "bars.csv"]])
def test_one_source_of_bars_is_required(qcli_home, qcli, args):
    code, out, err = qcli("pipeline", "run", *args, "--json")
    assert code == 2 and out == ""
    assert "give either --sample or --input PATH" in err
    assert not (qcli_home / "reports").exists()


def test_a_bad_config_is_refused_before_the_first_stage(qcli_home, qcli, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[label]\nname = 5\n")
    bars = tmp_path / "bars.csv"
    bars.write_text("ts,open,high,low,close,volume\n")
    code, out, err = qcli("pipeline", "run", "--input", bars, "--config", cfg, "--json")
    assert code == 2 and out == "", err
    assert str(cfg) in err
    assert not (qcli_home / "offline.duckdb").exists()  # ingest never ran
    # the library refuses the same way, through the workspace or its deprecated alias
    with pytest.raises(InputError, match=r"bad\.toml"):
        run_pipeline(inputs=[bars], workspace=Workspace.from_env(config=cfg))
    with pytest.raises(InputError, match=r"bad\.toml"):
        run_pipeline(inputs=[bars], config_path=cfg)
