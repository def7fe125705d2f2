"""What every command shares: the ``--json`` option, output, progress, and the error handler.

Human output (rich tables) goes to stdout; progress bars and notes go to stderr. With ``--json``
stdout carries exactly one JSON object, the command's result, and nothing else.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object (the result) on stdout, nothing else.")
]

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays
        return obj.tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def to_json(result: Any) -> str:
    return json.dumps(_finite(json.loads(json.dumps(result, default=_default))), indent=2)


def emit(result: dict[str, Any], json_mode: bool, render: Callable[[Console], None] | None = None):
    """Print ``result`` as JSON (``--json``) or call ``render`` with the stdout console."""
    if json_mode:
        sys.stdout.write(to_json(result) + "\n")
        sys.stdout.flush()
    elif render is not None:
        render(stdout)


def note(message: str, json_mode: bool = False) -> None:
    """A human note on stderr (suppressed with ``--json``)."""
    if not json_mode:
        stderr.print(message)


@contextmanager
def progress(json_mode: bool = False, transient: bool = True) -> Iterator[Any]:
    """A rich progress display on stderr; disabled (but still usable) with ``--json``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

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
