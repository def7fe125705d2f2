"""Hostile configuration: a --config that is a directory or not UTF-8, non-finite numbers in any
section, and every numeric environment variable quantcli reads (nan, abc, negative): exit code
2 naming the file, key or variable, and never a hang."""

from __future__ import annotations

import pytest

from quantcli.config import env_float, env_int, env_memory_limit, load_config
from quantcli.errors import InputError


def test_a_config_directory_exits_2_naming_it(qcli_home, tmp_path, qcli):
    code, out, err = qcli("backtest", "cpcv", "--config", str(tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith(f"Error: {tmp_path}: is a directory\nHint: --config takes a TOML file")


def test_a_config_file_that_is_not_utf8_exits_2_naming_the_line(qcli_home, tmp_path, qcli):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[gates]\nmin_sharpe = 1.0 # \xe9t\xe9\n")
    code, _, err = qcli("backtest", "cpcv", "--config", str(path))
    assert code == 2
    assert err == f"Error: {path} line 2: not UTF-8 (byte 0xe9)\n", err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[parity]\nfp32_max_loss_pct = 1e308\n", "[parity] fp32_max_loss_pct must be in (0, 100]"),
        ("[lightgbm]\nlearning_rate = nan\n", "[lightgbm] learning_rate must be a finite number"),
        ("[lightgbm]\nreg_alpha = -inf\n", "[lightgbm] reg_alpha must be a finite number"),
        ("[guard]\nmax_error_rate = nan\n", "[guard] max_error_rate must be a finite number"),
        ("[data]\nfuture_days = inf\n", "[data] future_days must be in [0, 36500]"),
        ('[data]\nearliest = "1900-13-01"\n', "[data] earliest must be a date (YYYY-MM-DD)"),
        # past 64 bits, under a range open at the top: DuckDB and NumPy would overflow later
        (f"[monitor]\nwindow_size = {10**29}\n", "[monitor] window_size must be a finite number"),
        (f"[cpcv]\nn_groups = {2**63}\n", "[cpcv] n_groups must be a finite number"),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_refused_in_every_section(tmp_path, toml, message):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(InputError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: {message}"), str(exc.value)


@pytest.mark.parametrize("raw", ["nan", "abc", "-1", "inf", "1e999", "0x10", "2 s"])
def test_env_float_refuses_anything_but_a_finite_number_in_range(monkeypatch, raw):
    monkeypatch.setenv("QCLI_X", raw)
    with pytest.raises(InputError) as exc:
        env_float("QCLI_X", 2.0, lo=0.0, hi=100.0, unit="seconds")
    assert str(exc.value) == (
        f"environment variable QCLI_X must be a number in [0, 100] seconds, got {raw!r}"
    )


@pytest.mark.parametrize(("raw", "value"), [(None, 2.0), ("", 2.0), (" 0.5 ", 0.5), ("100", 100)])
def test_env_float_reads_a_number_or_the_default(monkeypatch, raw, value):
    if raw is None:
        monkeypatch.delenv("QCLI_X", raising=False)
    else:
        monkeypatch.setenv("QCLI_X", raw)
    assert env_float("QCLI_X", 2.0, lo=0.0, hi=100.0) == value


@pytest.mark.parametrize("raw", ["-3", "0", "1.5", "two", "99999"])
def test_env_int_refuses_anything_but_an_integer_in_range(monkeypatch, raw):
    monkeypatch.setenv("QCLI_FEATURE_THREADS", raw)
    from quantcli.features.engine import n_threads

    with pytest.raises(InputError, match=r"QCLI_FEATURE_THREADS must be an integer in \[1, 1024\]"):
        n_threads()
    assert env_int("QCLI_Y", 4, lo=1, hi=8) == 4


@pytest.mark.parametrize("raw", ["-1", "-1GB", "0GB", "1KB", "10MiB"])
def test_a_memory_limit_duckdb_would_misread_is_refused(monkeypatch, raw):
    monkeypatch.setenv("QCLI_BUILD_MEMORY_LIMIT", raw)
    with pytest.raises(InputError, match="QCLI_BUILD_MEMORY_LIMIT must be a memory size of at"):
        env_memory_limit("QCLI_BUILD_MEMORY_LIMIT", "4GB")


def test_a_sane_memory_limit_passes_through(monkeypatch):
    monkeypatch.setenv("QCLI_BUILD_MEMORY_LIMIT", "512MB")
    assert env_memory_limit("QCLI_BUILD_MEMORY_LIMIT", "4GB") == "512MB"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("raw", ["nan", "abc", "-2"])
def test_a_bad_busy_timeout_exits_2_at_once_even_while_another_writer_holds_the_store(
    qcli_home, store_holder, qcli, raw
):
    """`nan` used to wait forever (no deadline compares true to nan; the subprocess timeout
    fails that), `abc` read as 2 s (the error and exit code fail that)."""
    out = qcli.subprocess("data", "ingest", "--sample", env={"QCLI_BUSY_TIMEOUT": raw}, timeout=60)
    assert out.code == 2, out.err
    assert out.err.startswith(
        f"Error: environment variable QCLI_BUSY_TIMEOUT must be a number in [0, 86400] "
        f"seconds, got {raw!r}"
    ), out.err


def test_a_bad_ingest_test_hook_value_exits_2(qcli_home, qcli, monkeypatch):
    monkeypatch.setenv("QCLI_TEST_INGEST_SLEEP", "abc")
    code, _, err = qcli("data", "ingest", "--sample")
    assert code == 2
    assert "environment variable QCLI_TEST_INGEST_SLEEP must be a number in [0, 3600]" in err


def test_a_python_caller_cannot_pass_a_nan_busy_timeout(tmp_path):
    from quantcli.store.offline import OfflineStore

    with pytest.raises(ValueError, match="`busy_timeout` must be a finite number >= 0"):
        OfflineStore(tmp_path / "s.duckdb", busy_timeout=float("nan"))


def test_a_qcli_home_that_is_a_file_exits_2_naming_it(tmp_path, monkeypatch, qcli):
    home = tmp_path / "not_a_dir"
    home.write_text("x")
    monkeypatch.setenv("QCLI_HOME", str(home))
    code, _, err = qcli("data", "ingest", "--sample")
    assert code == 2
    assert err.startswith(f"Error: {home}: cannot create the state directory: File exists"), err


def test_a_store_file_that_is_not_duckdb_exits_2_naming_it(qcli_home, qcli):
    (qcli_home / "offline.duckdb").write_bytes(b"not a database" * 100)
    code, _, err = qcli("data", "ingest", "--sample")
    assert code == 2
    store = qcli_home / "offline.duckdb"
    assert err.startswith(f"Error: {store}: cannot open the offline store"), err
