"""`qcli model ...`: train, validate, export, scan, promote and roll back models."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Train, validate, export, scan, promote and roll back models (MLflow registry).",
    no_args_is_help=True,
)
