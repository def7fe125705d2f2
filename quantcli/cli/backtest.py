"""`qcli backtest ...`: Combinatorial purged cross-validation backtests with gates."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Combinatorial purged cross-validation backtests with gates.", no_args_is_help=True
)
