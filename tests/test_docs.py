"""Docs that must match the code: the generated CLI reference and the README's commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_matches_the_code():
    from quantcli.cli._reference import render

    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == render(), (
        "docs/cli.md is stale: regenerate with `python -m quantcli.cli._reference > docs/cli.md`"
    )


def test_readme_opens_with_the_two_fresh_machine_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert lines == [
        'pip install -e ".[dev]" && qcli pipeline run --sample',
        'pip install -e ".[dev]" && pytest tests',
    ]


def test_every_command_in_the_readme_tour_exists():
    from quantcli.cli._reference import render

    reference = render()
    text = (ROOT / "README.md").read_text()
    used = set(re.findall(r"^qcli ((?:[a-z-]+ ?){1,2})", text, re.M))
    assert used, "the README tour names no command"
    for cmd in used:
        words = cmd.split()
        # `qcli data ingest` -> heading "`qcli data ingest`"; `qcli predict SPX` -> "`qcli predict`"
        assert f"`qcli {' '.join(words)}`" in reference or f"`qcli {words[0]}`" in reference, cmd
