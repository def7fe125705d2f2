"""Generate ``docs/cli.md`` from the command tree, so the CLI reference always matches the code.

Regenerate with ``python -m quantcli.cli._reference > docs/cli.md``; ``tests/test_docs.py`` fails
when the committed file differs from what the code generates.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import typer

HEADER = """# CLI reference

Generated from the code by `python -m quantcli.cli._reference > docs/cli.md` (a test checks
that this file matches the code). Every command takes `--json` (one JSON object on stdout) and
exits 0 on success, 1 when a gate or check fails, 2 on bad input or usage.
"""


_MARKUP = re.compile(r"\[/?(bold|italic|dim|green|red|yellow|cyan|magenta|blue)?\]")


def _plain(text: str) -> str:
    """Help text without rich markup tags such as ``[bold]`` and ``[/]``."""
    return _MARKUP.sub("", text)


def _walk(cmd: Any, path: list[str]):
    yield path, cmd
    for name in getattr(cmd, "commands", {}) or {}:
        sub = cmd.commands[name]
        if getattr(sub, "hidden", False):
            continue
        yield from _walk(sub, [*path, name])


def _param_line(p: Any) -> str | None:
    if getattr(p, "hidden", False) or p.name in ("help", "install_completion", "show_completion"):
        return None
    if p.param_type_name == "argument":
        name = p.name.upper() + ("..." if p.nargs == -1 else "")
        req = "required" if p.required else "optional"
        return f"| `{name}` | argument, {req} | {(getattr(p, 'help', None) or '').strip()} |"
    opts = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
    default = p.default
    if p.is_flag or default in (None, False, ()) or callable(default):
        dflt = ""
    else:
        dflt = f" (default: `{default}`)"
    text = _plain(p.help or "").replace("|", "\\|").replace("\n", " ").strip()
    return f"| {opts} | {'flag' if p.is_flag else 'option'} | {text}{dflt} |"


def render() -> str:
    from quantcli.cli import app

    root = typer.main.get_command(app)
    out = [HEADER]
    for path, cmd in _walk(root, ["qcli"]):
        is_group = bool(getattr(cmd, "commands", None))
        if len(path) == 1:
            continue
        level = "##" if is_group or len(path) == 2 else "###"
        out.append(f"{level} `{' '.join(path)}`\n")
        helptext = (cmd.help or "").strip()
        if helptext:
            out.append(_plain(helptext.replace("\b\n", "")) + "\n")
        if is_group:
            continue
        rows = [r for r in (_param_line(p) for p in cmd.params) if r]
        if rows:
            out.append("| parameter | kind | description |\n|---|---|---|")
            out.extend(rows)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
