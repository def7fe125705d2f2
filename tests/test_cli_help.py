"""Help screens: every word shown, reflowed to the width, flags as flags, choices listed.

docs/cli.md is every command's ``--help`` at 80 columns; it must equal what the code renders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from quantcli.cli import command
from quantcli.cli._reference import WIDTH, help_text, render, walk

ROOT = Path(__file__).resolve().parents[1]
STYLE_TAG = re.compile(r"\[/?(bold|italic|dim|green|red|yellow|cyan|magenta|blue)?\]")
BOX = re.compile(r"[\s│─╭╮╰╯]+")


@pytest.fixture(scope="module")
def root():
    return command()


_RENDERED: dict[tuple[tuple[str, ...], int], str] = {}


def _help(root, path: list[str], width: int = WIDTH) -> str:
    """``help_text`` memoized: several checks read the same screens."""
    key = (tuple(path), width)
    if key not in _RENDERED:
        _RENDERED[key] = help_text(root, path, width)
    return _RENDERED[key]


@pytest.fixture(scope="module")
def commands(root):
    return [(path, cmd) for path, cmd in walk(root) if path]


def _squash(text: str) -> str:
    return BOX.sub("", text)


def _source_texts(cmd) -> list[str]:
    """The help texts as written in the code (docstring and option helps), markup removed."""
    texts = [cmd.help or ""]
    texts += [p.help or "" for p in cmd.params if not getattr(p, "hidden", False)]
    return [STYLE_TAG.sub("", t).replace("\\[", "[").replace("\b", "") for t in texts]


def test_docs_cli_md_is_the_rendered_help():
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == render(), (
        "docs/cli.md is stale: regenerate with `python -m quantcli.cli._reference > docs/cli.md`"
    )


def test_installed_command_prints_what_the_docs_show():
    """The real `qcli` process at COLUMNS=80 prints the block of docs/cli.md, uncoloured."""
    env = {**os.environ, "COLUMNS": str(WIDTH), "TERM": "xterm-256color"}
    for var in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TERMINAL_WIDTH"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "quantcli", "monitor", "drift", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout
    shown = "\n".join(line.rstrip() for line in proc.stdout.splitlines()).strip("\n")
    docs = (ROOT / "docs" / "cli.md").read_text()
    assert f"### `qcli monitor drift`\n\n```text\n{shown}\n```" in docs


def test_every_word_of_every_help_text_is_shown(root, commands):
    """Rich markup must not eat bracketed words such as [drift] or [lightgbm]."""
    seen_brackets = 0
    for path, cmd in commands:
        shown = _squash(_help(root, path, width=200))
        for text in _source_texts(cmd):
            for word in text.split():
                seen_brackets += word.startswith("[")
                assert word in shown, f"qcli {' '.join(path)} --help lost {word!r}"
    assert seen_brackets > 5  # the check above saw bracketed words at all


def test_monitor_drift_help_names_its_config_sections(root):
    text = _help(root, ["monitor", "drift"], width=200)
    assert "[drift], [monitor], [retrain] and [guard] sections" in text


def test_paragraphs_reflow_to_the_terminal_width(root, commands):
    """At 200 columns a prose paragraph of the source is one line, not its source lines."""
    checked = 0
    for path, cmd in commands:
        text = _help(root, path, width=200)
        for para in (cmd.help or "").split("\n\n")[1:]:
            if para.startswith((" ", "\b")) or "\n" in para or len(para) > 180:
                continue  # examples, lists and long paragraphs wrap on their own
            plain = STYLE_TAG.sub("", para).replace("\\[", "[")
            assert plain in text, f"qcli {' '.join(path)}: paragraph not on one line: {plain!r}"
            checked += 1
    assert checked > 20
    assert "empty-bin shares floored at 1e-4, natural log;" in _help(
        root, ["monitor", "drift"], width=200
    )


def test_flags_show_no_value_placeholder(commands, root):
    for path, _ in commands:
        assert "<bool>" not in _help(root, path, width=200), f"qcli {' '.join(path)}"
    train = _help(root, ["model", "train"])
    assert re.search(r"--json +Print one JSON", train)


@pytest.mark.parametrize(
    ("path", "option", "choices"),
    [
        (["features", "build"], "--engine", "<kernel|polars>"),
        (["features", "build"], "--executor", "<local|ray>"),
        (["features", "materialize"], "--executor", "<local|ray>"),
        (["features", "materialize"], "--online-store", "<sqlite|redis>"),
        (["backtest", "cpcv"], "--executor", "<local|ray>"),
        (["backtest", "cpcv"], "--grid", "<none|small>"),
        (["model", "train"], "--family", "<lgbm|mlp|ensemble>"),
        (["model", "train"], "--executor", "<local|ray>"),
        (["pipeline", "run"], "--family", "<lgbm|mlp|ensemble>"),
        (["serve"], "--alias", "<production|staging>"),
        (["predict"], "--alias", "<production|staging>"),
        (["model", "export"], "--quantize", "<int8>"),
        (["model", "export"], "--int8-method", "<dynamic|static|weight-only>"),
        (["model", "rollout"], "--mode", "<canary|shadow>"),
    ],
)
def test_choices_are_listed_in_help(root, path, option, choices):
    assert re.search(rf"{option} +{re.escape(choices)}", _help(root, path, width=120))


def test_choices_complete_in_the_shell():
    env = {
        **os.environ,
        "_QCLI_COMPLETE": "complete_bash",
        "COMP_WORDS": "qcli features materialize --executor ",
        "COMP_CWORD": "4",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from quantcli.cli import main; main()"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.stdout.split() == ["local", "ray"], proc.stdout + proc.stderr


def test_option_names_mean_one_thing_everywhere(commands):
    """--executor is local|ray, --engine kernel|polars, --model a registered name."""
    meaning: dict[str, set[str]] = {}
    for _, cmd in commands:
        for p in cmd.params:
            if getattr(p, "hidden", False) or p.param_type_name != "option":
                continue
            desc = p.type_descriptor
            choices = desc.choices if desc.is_choice else None
            for opt in p.opts:
                meaning.setdefault(opt, set()).add("|".join(map(str, choices or ["free"])))
    assert meaning["--executor"] == {"local|ray"}
    assert meaning["--engine"] == {"kernel|polars"}
    assert meaning["--model"] == {"free"}
    assert meaning["--family"] == {"lgbm|mlp|ensemble"}


def test_old_spellings_still_work_with_a_warning(qcli, qcli_home):
    code, _, err = qcli("features", "materialize", "--engine", "spark")
    assert code == 2 and "spark" in err  # the alias is checked like the new option
    # the old spelling is honoured (it gets as far as the missing store) with a warning
    code, _, err = qcli("model", "train", "--name", "x", "--model", "mlp")
    assert err.startswith("Warning: --model is deprecated here; use --family mlp")
    assert code == 2 and "no offline store" in err
    code, _, err = qcli("model", "train", "--name", "x", "--model", "mlp", "--family", "ensemble")
    assert code == 2 and "--model is the deprecated spelling of --family" in err


def test_model_list_without_a_name_lists_every_model(qcli, qcli_home, mlflow_template_db):
    import shutil

    from quantcli.models.registry import ModelRegistry

    shutil.copy(mlflow_template_db, qcli_home / "mlflow.db")
    client = ModelRegistry().client
    for name, n_versions, aliases in (
        ("beta", 2, {"staging": 2, "production": 1}),
        ("alpha", 1, {}),
    ):
        client.create_registered_model(name)
        for _ in range(n_versions):
            client.create_model_version(name, source=(qcli_home / name).as_uri())
        for alias, version in aliases.items():
            client.set_registered_model_alias(name, alias, str(version))
    code, out, err = qcli("model", "list", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [(m["name"], m["aliases"], m["latest_version"]) for m in result["models"]] == [
        ("alpha", {}, "1"),
        ("beta", {"production": "1", "staging": "2"}, "2"),
    ]
    code, out, err = qcli("model", "list")
    assert code == 0, err
    assert "production=v1 staging=v2" in out
