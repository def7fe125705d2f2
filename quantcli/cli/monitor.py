"""`qcli monitor ...`: Drift, rolling performance, retraining triggers and alert guards."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Drift, rolling performance, retraining triggers and alert guards.", no_args_is_help=True
)
