"""The CLI shell: help, version, the error handler and lazy heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("mlflow", "feast", "onnxruntime", "lightgbm", "ray")


def _loaded_after_root_help(prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with ``prefixes`` that ``qcli --help`` imports, in a fresh process."""
    code = (
        "import sys\n"
        "from quantcli.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"hits = sorted(m for m in sys.modules if m.startswith({prefixes!r}))\n"
        "print('LOADED=' + ','.join(hits))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.strip().splitlines()[-1]
    assert loaded.startswith("LOADED="), out.stdout
    return [m for m in loaded.removeprefix("LOADED=").split(",") if m]


def test_help_imports_no_heavy_package():
    loaded = _loaded_after_root_help(HEAVY)
    assert loaded == [], f"qcli --help imported heavy packages: {loaded}"


def test_root_help_loads_no_command_module():
    # the root lists its groups from a table; loading them would import polars, numba and duckdb
    prefixes = ("quantcli.cli.", "quantcli.features", "quantcli.models", "polars", "numba")
    assert _loaded_after_root_help(prefixes) == ["quantcli.cli._common"]


def test_the_roots_one_liners_are_each_commands_own_help():
    from quantcli.cli import GROUPS, TOP_COMMANDS, load_command

    listed = {**{name: short for name, (_, short) in GROUPS.items()}, **TOP_COMMANDS}
    for name, short in listed.items():
        real = load_command(name)
        assert real.name == name
        assert " ".join((real.help or "").split("\n\n")[0].split()) == short, name


@pytest.mark.parametrize(
    "group", ["data", "features", "backtest", "model", "monitor", "audit", "pipeline"]
)
def test_every_group_has_help(group, qcli):
    # in-process (seven fresh interpreters cost ~5 s); the real process boundary is checked by
    # the lazy-import, --version and exit-2 tests around this one
    code, out, err = qcli(group, "--help")
    assert code == 0, err
    assert group in out


def test_version(qcli):
    from quantcli import __version__

    out = qcli.subprocess("--version", timeout=120)
    assert out.code == 0
    assert out.out.strip() == f"qcli {__version__}"


def test_unknown_command_is_usage_error_exit_2(qcli):
    out = qcli.subprocess("no-such-command", timeout=120)
    assert out.code == 2
    assert "no-such-command" in out.err


def test_json_writer_turns_nan_into_null():
    from quantcli.cli._common import to_json

    assert json.loads(to_json({"a": float("nan"), "b": [1.0, float("inf")]})) == {
        "a": None,
        "b": [1.0, None],
    }


def test_error_message_with_markup_characters_is_printed_verbatim(tmp_path, qcli):
    bad = tmp_path / "m[bold]x[red].toml"
    bad.write_text("this is = = not toml")
    env = {"QCLI_HOME": str(tmp_path / "home")}
    out = qcli.subprocess("pipeline", "run", "--sample", "--config", str(bad), env=env)
    assert out.code == 2, out.err
    assert "m[bold]x[red].toml" in out.err.replace("\n", "")
    assert "Traceback" not in out.err


@pytest.mark.parametrize("kind", ["keyboard", "duckdb", "duckdb-runtime", "other"])
def test_ctrl_c_inside_a_duckdb_query_is_an_interrupt(monkeypatch, capsys, kind):
    """Ctrl-C is "Interrupted." and exit 130 whether Python or DuckDB raised it; any other
    error is a crash, exit 3."""
    import duckdb

    import quantcli.features.build as build
    from quantcli.cli import main

    errors = {
        "keyboard": KeyboardInterrupt(),
        "duckdb": duckdb.InterruptException("Query interrupted"),
        "duckdb-runtime": RuntimeError("Query interrupted"),
        "other": RuntimeError("disk on fire"),
    }

    def interrupted(*args, **kwargs):
        raise errors[kind]

    monkeypatch.setattr(build, "build_features", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["features", "build"])
    err = capsys.readouterr().err
    if kind == "other":  # a crash: not a failed check (1) nor bad input (2), one line, no trace
        assert exc.value.code == 3
        assert err.splitlines()[0] == "Internal error: RuntimeError: disk on fire"
        assert "Traceback" not in err and "--debug" in err
        return
    assert exc.value.code == 130
    assert err.strip() == "Interrupted."
