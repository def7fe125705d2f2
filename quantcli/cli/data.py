"""`qcli data ...`: Ingest and validate OHLCV bars into the offline store."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Ingest and validate OHLCV bars into the offline store.", no_args_is_help=True
)
