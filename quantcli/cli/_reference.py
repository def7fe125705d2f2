"""Generate ``docs/cli.md`` from the command tree: every command's ``--help`` at 80 columns.

Regenerate with ``python -m quantcli.cli._reference > docs/cli.md``; ``tests/test_cli_help.py``
fails when the committed file differs from what the code renders.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any

from quantcli.cli import command

HEADER = """# CLI reference

Generated from the code by `python -m quantcli.cli._reference > docs/cli.md`: each block is
the command's `--help` at 80 columns (a test checks that this file matches the code). Every
command takes `--json` (one JSON object on stdout) and exits 0 on success, 1 when a gate or
check fails, 2 on bad input or usage. Choices are listed as `<a|b>`; shell completion offers
them too (`qcli --install-completion`).
"""

WIDTH = 80
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def walk(cmd: Any, path: list[str] | None = None) -> Iterator[tuple[list[str], Any]]:
    """``(path, command)`` of every visible command below ``cmd``, depth first, in order."""
    path = path or []
    yield path, cmd
    if not hasattr(cmd, "list_commands"):
        return
    ctx = cmd.make_context(cmd.name or "qcli", [], resilient_parsing=True)
    for name in cmd.list_commands(ctx):  # the root loads its groups on demand
        sub = cmd.get_command(ctx, name)
        if sub is not None and not getattr(sub, "hidden", False):
            yield from walk(sub, [*path, name])


def help_text(root: Any, path: list[str], width: int = WIDTH) -> str:
    """What ``qcli PATH --help`` prints at ``width`` columns, without trailing blanks."""
    buf = io.StringIO()
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # rich sizes a non-terminal console from COLUMNS
    try:
        with redirect_stdout(buf):
            root.main(args=[*path, "--help"], prog_name="qcli", standalone_mode=False)
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    lines = [line.rstrip() for line in _ANSI.sub("", buf.getvalue()).splitlines()]
    return "\n".join(lines).strip("\n")


def render() -> str:
    root = command()
    out = [HEADER]
    for path, _ in walk(root):
        title = " ".join(["qcli", *path])
        level = "##" if len(path) <= 1 else "###"
        out.append(f"{level} `{title}`\n\n```text\n{help_text(root, path)}\n```\n")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
