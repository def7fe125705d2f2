"""`qcli model shadow`: replay stored features through a candidate and production, compare.

Added onto the `qcli model` sub-app (one owner per file); the work is
:func:`quantcli.monitoring.shadow.run_shadow`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from quantcli.cli._common import JsonOpt, emit, progress
from quantcli.cli.model import NameArg, TrackingOpt, app


def _num(x: Any, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _shadow_table(r: dict[str, Any]):
    from rich.table import Table

    verdict = "[green]pass[/]" if r["passed"] else "[bold red]FAIL[/]"
    table = Table(
        title=f"Shadow {r['model']}: {r['candidate']['alias']} (v{r['candidate']['version']}) vs "
        f"{r['against']['alias']} (v{r['against']['version']}) since {r['since']}: {verdict}"
    )
    table.add_column("")
    table.add_column("candidate", justify="right")
    table.add_column("against", justify="right")
    c, a = r["candidate"], r["against"]
    table.add_row(
        "cumulative return",
        _num(c["cumulative_return"], ".2%"),
        _num(a["cumulative_return"], ".2%"),
    )
    table.add_row("Sharpe (annualized)", _num(c["sharpe"], ".3f"), _num(a["sharpe"], ".3f"))
    table.add_row("max drawdown", _num(c["max_drawdown"], ".2%"), _num(a["max_drawdown"], ".2%"))
    table.add_row(
        "direction accuracy",
        _num(c["direction_accuracy"], ".2%"),
        _num(a["direction_accuracy"], ".2%"),
    )
    p = r["prediction"]
    table.caption = (
        f"{r['n_rows']} rows, {r['n_periods']} periods; prediction |diff| mean "
        f"{p['mean_abs_diff']:.3g}, max {p['max_abs_diff']:.3g}; sign agreement "
        f"{p['sign_agreement']:.1%}; P&L divergence {_num(r['pnl_divergence'], '.2%')} "
        f"(max {r['max_pnl_divergence']:.0%})"
    )
    return table


@app.command("shadow")
def shadow(
    name: NameArg,
    since: Annotated[
        str, typer.Option("--since", help="Replay stored features from this date (YYYY-MM-DD).")
    ],
    candidate: Annotated[
        str, typer.Option("--candidate", help="Alias or version of the candidate.")
    ] = "staging",
    against: Annotated[
        str, typer.Option("--against", help="Alias or version it is compared against.")
    ] = "production",
    max_pnl_divergence: Annotated[
        float | None,
        typer.Option(
            "--max-pnl-divergence",
            help="Largest acceptable |W_candidate / W_against - 1| "
            "(default: config shadow.max_pnl_divergence, 0.05).",
        ),
    ] = None,
    feature_set: Annotated[str, typer.Option("--feature-set")] = "technical_v1",
    label: Annotated[
        str, typer.Option("--label", help="Realised forward return used for the P&L.")
    ] = "fwd_return_5d",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML overriding the shadow section (max_pnl_divergence).",
            dir_okay=False,
        ),
    ] = None,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Shadow a candidate against production on recent stored features; exit 1 if P&L diverges.

    Both exported ONNX graphs (the real runtime, signatures verified) predict the same rows;
    the report compares predictions and the sign(prediction) strategy P&L.

    Examples:

        qcli model shadow momentum --since 2024-01-01
        qcli model shadow momentum --candidate 7 --against production --since 2024-03-01 --json
    """
    from quantcli.config import load_config
    from quantcli.errors import GateFailedError
    from quantcli.monitoring.shadow import run_shadow

    limit = max_pnl_divergence
    if limit is None:
        limit = load_config(config)["shadow"]["max_pnl_divergence"]
    with progress(json_mode) as bar:
        bar.add_task("replaying features through both models", total=None)
        r = run_shadow(
            name,
            candidate=candidate,
            against=against,
            since=since,
            feature_set=feature_set,
            label=label,
            max_pnl_divergence=limit,
            tracking_uri=tracking_uri,
        )
    if r["passed"] or not json_mode:
        emit(r, json_mode, lambda con: con.print(_shadow_table(r)))
    if not r["passed"]:
        raise GateFailedError(
            f"shadow: P&L divergence {r['pnl_divergence']:.2%} beyond {limit:.0%}",
            reasons=[
                f"candidate cumulative return {r['candidate']['cumulative_return']:.2%} vs "
                f"{r['against']['cumulative_return']:.2%}"
            ],
            result=r,
        )


__all__ = ["app"]
