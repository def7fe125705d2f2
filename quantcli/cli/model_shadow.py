"""`qcli model shadow`: replay stored features through a candidate and production, compare.

Added onto the `qcli model` sub-app (one owner per file); the work is
:func:`quantcli.monitoring.shadow.run_shadow` (replay) or
:func:`quantcli.monitoring.shadow_live.run_live_shadow` (``--live``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from quantcli.cli._common import JsonOpt, finish, progress
from quantcli.cli.model import NameArg, TrackingOpt, app
from quantcli.errors import InputError
from quantcli.monitoring.shadow import run_shadow
from quantcli.monitoring.shadow_live import run_live_shadow
from quantcli.workspace import Workspace


def _num(x: Any, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _shadow_table(r: dict[str, Any]) -> Table:
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
        str | None,
        typer.Option(
            "--since",
            help="Replay: stored features from this date (YYYY-MM-DD), required. --live: "
            "shadow records from this date or ISO time (default: all).",
        ),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Compare the live shadow a running `qcli serve` recorded in the audit ledger "
            "(prediction divergence now, realized P&L divergence once returns are known) "
            "instead of replaying stored features.",
        ),
    ] = False,
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
    """Shadow a candidate against production; exit 1 if the P&L diverges beyond the limit.

    Replay (default): both exported ONNX graphs (the real runtime, signatures verified) predict
    the stored rows since --since; the report compares predictions and the sign(prediction)
    strategy P&L. --live: the predictions a running service's shadow made (`qcli serve
    --shadow-alias staging`, or a `qcli model rollout --mode shadow`) against the production
    predictions of the same requests, from the audit ledger; the P&L uses the forward returns
    known so far. A divergence beyond the limit also alerts ([alerts] warning_url).

    Examples:

        qcli model shadow momentum --since 2024-01-01
        qcli model shadow momentum --candidate 7 --against production --since 2024-03-01 --json
        qcli model shadow momentum --live --since 2026-06-01
    """
    if max_pnl_divergence is not None and not (
        max_pnl_divergence >= 0 and math.isfinite(max_pnl_divergence)
    ):
        raise InputError(f"--max-pnl-divergence must be a fraction >= 0, got {max_pnl_divergence}")
    ws = Workspace.from_env(tracking_uri=tracking_uri, config=config)
    if live:
        r = run_live_shadow(
            name,
            since=since,
            feature_set=feature_set,
            label=label,
            max_pnl_divergence=max_pnl_divergence,
            workspace=ws,
        )
        finish(r, json_mode, lambda con: con.print(_live_summary(r.to_dict())))
        return
    if since is None:
        raise InputError("--since is required to replay stored features (or use --live)")
    with progress(json_mode) as bar:
        bar.add_task("replaying features through both models", total=None)
        r = run_shadow(
            name,
            candidate=candidate,
            against=against,
            since=since,
            feature_set=feature_set,
            label=label,
            max_pnl_divergence=max_pnl_divergence,
            workspace=ws,
        )
    finish(r, json_mode, lambda con: con.print(_shadow_table(r.to_dict())))


def _live_summary(r: dict[str, Any]) -> str:
    p = r["prediction"]
    return (
        f"live shadow of {r['model']}: {r['n_records']} records (shadow v"
        f"{', v'.join(r['shadow_versions'])} vs production v"
        f"{', v'.join(r['production_versions'])}); prediction |diff| mean "
        f"{p['mean_abs_diff']:.3g}, max {p['max_abs_diff']:.3g}, sign agreement "
        f"{p['sign_agreement']:.1%}; realized P&L divergence {_num(r['pnl_divergence'], '.2%')} "
        f"over {r['n_realized']} records with known returns (max {r['max_pnl_divergence']:.0%})"
    )


__all__ = ["app"]
