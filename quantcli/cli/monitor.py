"""`qcli monitor ...`: Drift, rolling performance, retraining triggers and alert guards.

Command bodies call :mod:`quantcli.monitoring`; the renderers below only format its results.
Every command is usable from cron: exit 0 when all is well, 1 when the check fails (significant
drift, degraded performance, retraining due, a CRITICAL guard finding), 2 on bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from quantcli.cli._common import JsonOpt, emit, finish, note, progress
from quantcli.monitoring.drift_check import run_drift_check
from quantcli.monitoring.guard import run_guard
from quantcli.monitoring.performance import check_performance
from quantcli.monitoring.retrain import RetrainingTrigger, check_retrain
from quantcli.workspace import Workspace

app = typer.Typer(
    help="Drift, rolling performance, retraining triggers and alert guards.", no_args_is_help=True
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML overriding the thresholds of its [drift], [monitor], [retrain] and [guard] "
        "sections (keys: docs/monitoring.md).",
        dir_okay=False,
    ),
]
MonitorOpt = Annotated[
    str, typer.Option("--monitor", help="The monitored model alias (one log per alias).")
]
_BAND_STYLE = {"significant": "bold red", "moderate": "yellow", "none": "green"}
_SEV_STYLE = {"CRITICAL": "bold red", "WARNING": "yellow", "INFO": "green"}


def _num(x: Any, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


# -- drift ---------------------------------------------------------------------------------
def _drift_table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"Feature drift: {result['n_drifted']} of {result['n_features']} drifted "
        f"(baseline {result['baseline_source']}; current {result['current_source']})"
    )
    table.caption = "excl: null/NaN/inf values of the current window, excluded from the tests"
    table.add_column("feature", no_wrap=True)
    for col in ("PSI", "band", "KS D", "KS p", "JS div", "drift", "excl"):
        table.add_column(
            col, justify="left" if col == "band" else "right", min_width=11 if col == "band" else 4
        )
    for f in result["features"]:
        c = f["current"]
        style = _BAND_STYLE[f["psi_band"]]
        table.add_row(
            f["feature"],
            _num(f["psi"]),
            f"[{style}]{f['psi_band']}[/]",
            _num(f["ks_statistic"]),
            _num(f["ks_pvalue"], ".3g"),
            _num(f["js_divergence"]),
            "[bold]yes[/]" if f["drifted"] else "no",
            f"{c['n_null']}/{c['n_nan']}/{c['n_inf']}",
        )
    return table


@app.command()
def drift(
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="PERIOD START:END of the stored features (e.g. 2017-01-01:2017-12-31), a "
            "Parquet/CSV file of features, or a saved profile (.npz).",
        ),
    ] = None,
    current: Annotated[
        str | None,
        typer.Option("--current", help="PERIOD START:END or a Parquet/CSV file of features."),
    ] = None,
    last: Annotated[
        str | None,
        typer.Option(
            "--last",
            help="Instead of --current: the DURATION (63d, 13w, 3m, 1y; calendar days, weeks, "
            "months, years) ending on the latest stored bar, not today.",
        ),
    ] = None,
    baseline_last: Annotated[
        str | None,
        typer.Option(
            "--baseline-last",
            help="Instead of --baseline: the DURATION just before the current window.",
        ),
    ] = None,
    features: Annotated[
        str | None, typer.Option("--features", help="Comma-separated features (default all).")
    ] = None,
    feature_set: Annotated[
        str, typer.Option("--feature-set", help="Feature set whose table a PERIOD reads.")
    ] = "technical_v1",
    save_profile: Annotated[
        Path | None,
        typer.Option("--save-profile", help="Save the baseline profile (.npz) for reuse."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="HTML report path (default $QCLI_HOME/reports/drift-<time>.html)."
        ),
    ] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Write no HTML report.")] = False,
    max_plots: Annotated[
        int, typer.Option("--max-plots", help="Histograms in the report (worst features first).")
    ] = 30,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Test every feature for drift (PSI, KS, JS divergence); exit 1 on significant drift.

    PSI uses 10 bins cut at the baseline's deciles (outer bins open-ended), empty-bin shares
    floored at 1e-4, natural log; KS is scipy's two-sample test; JS is the divergence in bits.
    A feature drifts when 2 of the 3 tests flag it; exit 1 when any PSI is >= 0.25.

    Give one current window (--current or --last) and one baseline (--baseline or
    --baseline-last). --last 63d is the 63 calendar days ending on the day of the latest bar
    of the stored features (so a re-run on the same store reads the same rows); 3m steps back
    3 calendar months. --baseline-last ends the day before the current window starts.

    Examples:

        qcli monitor drift --baseline 2017-01-01:2017-12-31 --current 2018-01-01:
        qcli monitor drift --baseline 2016-01-01:2017-12-31 --last 13w      # cron-friendly
        qcli monitor drift --baseline-last 1y --last 3m --json
        qcli monitor drift --baseline 2017-01-01:2017-12-31 --current 2018-06-01:2018-06-30 \\
            --save-profile base2017.npz
        qcli monitor drift --baseline base2017.npz --current today.parquet --json
    """
    feats = [f.strip() for f in features.split(",") if f.strip()] if features else None
    with progress(json_mode) as bar:
        task = bar.add_task("drift", total=None)
        result = run_drift_check(
            baseline,
            current,
            last=last,
            baseline_last=baseline_last,
            features=feats,
            feature_set=feature_set,
            save_profile=save_profile,
            report=None if no_report else (report or "auto"),
            max_plots=max_plots,
            workspace=Workspace.from_env(config=config),
            on_step=lambda s: bar.update(task, description=s),
        )
    _drift_notes(result.to_dict(), json_mode)
    finish(result, json_mode, lambda con: con.print(_drift_table(result.to_dict())))


def _drift_notes(out: dict[str, Any], json_mode: bool) -> None:
    """Where relative windows resolved to, and the files the check wrote (stderr)."""
    win = out["windows"]
    for side in ("baseline", "current"):
        if win[f"{side}_option"] not in ("--baseline", "--current"):
            note(f"{side}: {win[f'{side}_option']} = {win[side]}", json_mode)
    if win["latest_bar"]:
        note(f"latest stored bar: {win['latest_bar']}", json_mode)
    for key in ("report", "profile"):
        if out[key]:
            note(f"{key}: {out[key]}", json_mode)


# -- performance ---------------------------------------------------------------------------
def _metrics_table(m: dict[str, Any]) -> Table:
    table = Table(title=f"Rolling performance of '{m['monitor']}'", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("window", f"{m['n_samples']} predictions, {m['n_periods']} periods")
    table.add_row("from .. to", f"{m['window_start']} .. {m['window_end']}")
    table.add_row("Sharpe (annualized)", _num(m["sharpe"], ".3f"))
    table.add_row("max drawdown", _num(m["max_drawdown"], ".2%"))
    table.add_row("win rate", _num(m["win_rate"], ".2%"))
    table.add_row("direction accuracy", _num(m["direction_accuracy"], ".2%"))
    table.add_row("correlation", _num(m["correlation"], ".3f"))
    table.add_row("degraded", "[bold red]yes[/]" if m["degraded"] else "[green]no[/]")
    return table


@app.command()
def performance(
    log: Annotated[
        Path | None,
        typer.Option(
            "--log",
            help="First log a Parquet/CSV of predictions (columns ts, prediction; optional "
            "actual, symbol).",
            dir_okay=False,
        ),
    ] = None,
    outcomes: Annotated[
        Path | None,
        typer.Option(
            "--outcomes",
            help="Then attach realised outcomes (columns symbol, ts, actual) to logged "
            "predictions that have none yet.",
            dir_okay=False,
        ),
    ] = None,
    window: Annotated[int | None, typer.Option("--window", help="Rolling window size.")] = None,
    feature_set: Annotated[
        str | None,
        typer.Option(
            "--feature-set",
            help="The model's feature set: its periods_per_year annualizes the Sharpe ratio "
            "(default: 252, daily bars).",
        ),
    ] = None,
    monitor: MonitorOpt = "production",
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Rolling Sharpe, drawdown, win rate, direction accuracy, correlation; exit 1 if degraded.

    The strategy takes sign(prediction) of the realised forward return; predictions sharing a
    timestamp form one period. Sharpe is annualized with the square root of the feature set's
    periods per year (252 for daily bars, e.g. 6240 for 24/5 hourly FX); drawdown is on
    compounded wealth. Each run is recorded (the guard reads the daily history).

    Examples:

        qcli monitor performance --log predictions_2024-06-03.parquet
        qcli monitor performance --outcomes outcomes_2024-06-10.csv   # labels known later
        qcli monitor performance --window 500 --json
    """
    m = check_performance(
        log=log,
        outcomes=outcomes,
        window=window,
        feature_set=feature_set,
        monitor=monitor,
        workspace=Workspace.from_env(config=config),
        on_note=lambda message: note(message, json_mode),
    )
    finish(m, json_mode, lambda con: con.print(_metrics_table(m.to_dict())))


# -- retrain-check -------------------------------------------------------------------------
@app.command("retrain-check")
def retrain_check(
    mark_trained: Annotated[
        bool,
        typer.Option("--mark-trained", help="Record that training just completed, then exit 0."),
    ] = False,
    monitor: MonitorOpt = "production",
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Is retraining due? Schedule, drift, performance or new samples; exit 1 when due.

    Reads the latest recorded drift check and the rolling performance; the last training time
    persists in the offline store.

    Examples:

        qcli monitor retrain-check            # cron: exit 1 means retrain
        qcli monitor retrain-check --mark-trained
    """
    ws = Workspace.from_env(config=config)
    if mark_trained:
        trigger = RetrainingTrigger(**ws.section("retrain"), name=monitor, workspace=ws)
        when = trigger.mark_training_completed()
        out = {"monitor": monitor, "marked_trained_at": when.isoformat()}
        emit(out, json_mode, lambda con: con.print(f"training recorded at {when.isoformat()}"))
        return
    decision = check_retrain(monitor=monitor, workspace=ws)
    finish(
        decision,
        json_mode,
        lambda con: con.print(
            "[bold red]retraining due[/]" if decision.due else "[green]retraining not due[/]"
        ),
    )


# -- guard ---------------------------------------------------------------------------------
def _guard_table(r: dict[str, Any]) -> Table:
    table = Table(title=f"Guard: {r['severity']} (action: {r['action']})")
    table.add_column("check")
    table.add_column("severity")
    table.add_column("finding")
    for f in r["findings"]:
        style = _SEV_STYLE[f["severity"]]
        table.add_row(f["check"], f"[{style}]{f['severity']}[/]", f["message"])
    return table


@app.command()
def guard(
    model: Annotated[
        str | None, typer.Option("--model", help="Registered model to roll back on CRITICAL.")
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            help="The service's /metrics URL, or a snapshot file (Prometheus text or JSON "
            "{requests, errors, slow_requests}).",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Bearer token for /metrics ($QCLI_API_TOKEN).")
    ] = None,
    auto_rollback: Annotated[
        bool,
        typer.Option("--auto-rollback", help="On CRITICAL, roll production back (needs --model)."),
    ] = False,
    halt_on_critical: Annotated[
        bool,
        typer.Option(
            "--halt/--no-halt",
            help="On CRITICAL (and no successful --auto-rollback), halt --model: every service "
            "answers 503 until `qcli model resume`.",
        ),
    ] = True,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking/registry URI.")
    ] = None,
    monitor: MonitorOpt = "production",
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Evaluate the alert and rollback triggers; exit 1 on a CRITICAL finding.

    Default thresholds (config section [guard]): CRITICAL: Sharpe < 0.8 on 3 consecutive
    days, drawdown beyond -25 %, error rate > 1 %. WARNING: latency > 500 ms for > 5 % of
    requests, drift in > 5 features (and early signs). With --auto-rollback a CRITICAL finding
    moves `production` back to the previous version and records why; every running service
    serves it within its poll interval. Otherwise a CRITICAL finding halts --model (the kill
    switch; --no-halt to only alert). Findings go to the [alerts] webhooks of --config
    (CRITICAL: critical_url, WARNING: warning_url), retried, dead-lettered if undeliverable.

    Examples:

        qcli monitor guard --metrics http://127.0.0.1:8000/metrics
        qcli monitor guard --model ndx_lgbm --metrics metrics.prom --auto-rollback --json
        qcli monitor guard --config guard.toml   # [guard] max_error_rate = 0.02
    """
    r = run_guard(
        model=model,
        metrics=metrics,
        token=token,
        auto_rollback=auto_rollback,
        halt_on_critical=halt_on_critical,
        monitor=monitor,
        workspace=Workspace.from_env(tracking_uri=tracking_uri, config=config),
    )
    finish(r, json_mode, lambda con: con.print(_guard_table(r.to_dict())))
