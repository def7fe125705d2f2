"""`qcli pipeline ...`: Run the whole flow in one command."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run the whole flow in one command.", no_args_is_help=True)
