"""`qcli features ...`: Build, inspect and materialize feature sets."""

from __future__ import annotations

import typer

app = typer.Typer(help="Build, inspect and materialize feature sets.", no_args_is_help=True)
