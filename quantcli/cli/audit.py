"""`qcli audit ...`: Verify and export the tamper-evident prediction audit ledger."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Verify and export the tamper-evident prediction audit ledger.", no_args_is_help=True
)
