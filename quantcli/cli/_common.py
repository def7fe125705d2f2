"""What every command shares: the ``--json`` option, output, progress, and the error handler.

Human output (rich tables) goes to stdout; progress bars and notes go to stderr. With ``--json``
stdout carries exactly one JSON object, the command's result, and nothing else.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from quantcli.results import Result, to_json

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object (the result) on stdout, nothing else.")
]

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def emit(result: dict[str, Any], json_mode: bool, render: Callable[[Console], None] | None = None):
    """Print ``result`` as JSON (``--json``) or call ``render`` with the stdout console."""
    if json_mode:
        sys.stdout.write(to_json(result) + "\n")
        sys.stdout.flush()
    elif render is not None:
        render(stdout)


def finish(result: Result, json_mode: bool, render: Callable[[Console], None]) -> None:
    """Render ``result``, then apply the one gate rule: ``raise_if_failed`` (exit 1).

    A failed result's JSON is printed by the error handler (from the GateFailedError), so it
    is not emitted here too: stdout holds one JSON object either way."""
    if result.passed or not json_mode:
        emit(result.to_dict(), json_mode, render)
    result.raise_if_failed()


def note(message: str, json_mode: bool = False) -> None:
    """A human note on stderr (suppressed with ``--json``)."""
    if not json_mode:
        stderr.print(message)


@contextmanager
def progress(json_mode: bool = False, transient: bool = True) -> Iterator[Any]:
    """A rich progress display on stderr; disabled (but still usable) with ``--json``."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=transient,
        disable=json_mode or not stderr.is_terminal,
    ) as bar:
        yield bar


# --- help text --------------------------------------------------------------------------------

# The style tags a docstring may use on purpose; any other [word] is literal text (a TOML
# section such as [drift]) that rich would otherwise swallow as an unknown tag.
_STYLE_TAG = re.compile(r"/?(bold|italic|dim|green|red|yellow|cyan|magenta|blue)?")
_TAG_LIKE = re.compile(r"(\\*)\[([a-zA-Z#/@][^\[\]]*?)?\]")


def escape_help(text: str) -> str:
    """Escape every ``[...]`` that is not one of the style tags above, so rich shows it."""

    def fix(m: re.Match[str]) -> str:
        if m.group(1) or _STYLE_TAG.fullmatch(m.group(2) or ""):
            return m.group(0)
        return "\\" + m.group(0)

    return _TAG_LIKE.sub(fix, text)


def reflow_help(text: str) -> str:
    """Join the hard-wrapped lines of each prose paragraph so the terminal reflows them.

    Indented paragraphs (examples) and ``\\b`` blocks keep their lines; a line starting with
    ``- `` starts a new list item.
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    out = []
    for para in paragraphs:
        lines = para.split("\n")
        if para.startswith("\b") or any(line.startswith(" ") for line in lines):
            out.append(para)
            continue
        items: list[str] = []
        for line in lines:
            if items and not line.startswith("- "):
                items[-1] += " " + line.strip()
            else:
                items.append(line.strip())
        out.append("\n".join(items))
    return "\n\n".join(out)


def polish_help(command: Any) -> Any:
    """Make every help screen of a click command tree readable (in place; returns it).

    Help paragraphs reflow to the terminal width, literal brackets survive rich markup, and
    flags show no value placeholder (typer would print ``<bool>``).
    """
    if getattr(command, "help", None):
        command.help = escape_help(reflow_help(command.help))
    for param in getattr(command, "params", []):
        if getattr(param, "help", None):
            param.help = escape_help(param.help)
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    if hasattr(command, "get_help_option"):
        command.get_help_option = _flag_help_option(command.get_help_option)
    for sub in (getattr(command, "commands", None) or {}).values():
        polish_help(sub)
    return command


def _flag_help_option(get_help_option: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap click's ``get_help_option`` so ``--help`` is shown as the flag it is, too."""

    def wrapped(ctx: Any) -> Any:
        option = get_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    return wrapped
