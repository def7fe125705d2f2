"""`qcli backtest ...`: Combinatorial purged cross-validation backtests with gates.

The command body calls :func:`quantcli.models.backtest.backtest_stored_features`; numba,
lightgbm, scipy and matplotlib load inside the command, so ``qcli --help`` stays instant.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer
from rich.table import Table

from quantcli.cli._choices import Executor, Grid
from quantcli.cli._common import JsonOpt, finish, progress
from quantcli.config import load_config
from quantcli.models.backtest import backtest_stored_features

app = typer.Typer(
    help="Combinatorial purged cross-validation backtests with gates.", no_args_is_help=True
)


def _f(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec) if isinstance(value, float) else str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "config defaults"


def _render(out: dict[str, Any]):
    m = out["metrics"]

    def render(console) -> None:
        cv = out["cv"]
        summary = Table(
            title=f"CPCV backtest: {out['feature_set']} / {out['label']} "
            f"(N={cv['n_groups']}, k={cv['n_test_groups']}, {cv['n_splits']} splits, "
            f"{cv['n_paths']} paths)",
            show_header=False,
        )
        summary.add_column("metric", style="bold")
        summary.add_column("value", justify="right")
        rows = [
            (
                "Sharpe net / gross, annualized (gated path)",
                f"{_f(m['sharpe'])} / {_f(m['gross_sharpe'])}",
            ),
            ("PSR (net, vs SR = 0)", _f(m["psr"], ".4f")),
            (f"DSR (net, {m['n_trials']} trial(s))", _f(m["dsr"], ".4f")),
            ("PBO (CSCV over the grid, net)", _f(m["pbo"], ".3f")),
            ("max drawdown (net, gated path)", _f(m["max_drawdown"], ".2%")),
            (
                "annual return net / gross (gated path)",
                f"{_f(m['annual_return'], '.2%')} / {_f(m['gross_annual_return'], '.2%')}",
            ),
            (
                "equity net / gross (gated path, from 1)",
                f"{_f(m['net_equity_final'])} / {_f(m['gross_equity_final'])}",
            ),
            ("turnover (x capital a year)", _f(m["turnover_annual"], ".1f")),
            ("cost drag (a year)", _f(m["cost_drag_annual"], ".2%")),
            ("break-even cost (bps per unit traded)", _f(m["break_even_cost_bps"], ".1f")),
            ("win rate (net, gated path)", _f(m["win_rate"], ".2%")),
            ("min track record (periods)", _f(m["min_trl"], ".1f")),
            (
                "path net Sharpe median / min / max",
                f"{_f(m['sharpe_median'])} / {_f(m['sharpe_min'])} / {_f(m['sharpe_max'])}",
            ),
            ("worst path drawdown (net)", _f(m["max_drawdown_worst"], ".2%")),
            (
                "fold IC mean / RMSE mean",
                f"{_f(m['ic_mean'], '.4f')} / {_f(m['rmse_mean'], '.4f')}",
            ),
            ("selected params", _params(out["selected_params"])),
        ]
        for key, value in rows:
            summary.add_row(key, value)
        console.print(summary)
        console.print(f"strategy: {out['strategy']['rule']}")

        paths = Table(title="Backtest paths (net of costs; gross beside)")
        cols = ("path", "net Sharpe", "gross Sharpe", "PSR", "max DD", "annual return")
        for col in (*cols, "turnover/yr", "cost drag"):
            paths.add_column(col, justify="right")
        for p in out["paths"]:
            paths.add_row(
                str(p["path"]) + (" *" if p["path"] == m["gated_path"] else ""),
                _f(p["sharpe"]),
                _f(p["gross_sharpe"]),
                _f(p["psr"], ".4f"),
                _f(p["max_drawdown"], ".2%"),
                _f(p["annual_return"], ".2%"),
                _f(p["turnover_annual"], ".1f"),
                _f(p["cost_drag_annual"], ".2%"),
            )
        console.print(paths)
        if len(out["grid"]) > 1:
            grid = Table(title="Grid (the trials of DSR and PBO)")
            for col in ("config", "params", "median path net Sharpe", "IC mean"):
                grid.add_column(col)
            for g in out["grid"]:
                mark = " *" if g["config"] == out["selected_config"] else ""
                grid.add_row(
                    f"{g['config']}{mark}",
                    _params(g["params"]),
                    _f(g["sharpe_median"]),
                    _f(g["ic_mean"], ".4f"),
                )
            console.print(grid)
        verdict = "[bold green]PASS[/]" if out["passed"] else "[bold red]FAIL[/]"
        console.print(f"gates: {verdict}  (* = gated path / selected config)")
        console.print(f"report: {out['report']['dir']}")

    return render


@app.command()
def cpcv(
    feature_set: Annotated[
        str | None, typer.Option("--feature-set", help="Stored feature set (default: config).")
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="Label to predict (default: fwd_return_5d).")
    ] = None,
    n_groups: Annotated[int | None, typer.Option("--n-groups", help="N groups (10).")] = None,
    n_test_groups: Annotated[
        int | None, typer.Option("--n-test-groups", help="k test groups per split (2).")
    ] = None,
    embargo_pct: Annotated[
        float | None,
        typer.Option("--embargo-pct", help="Embargo after each test block, share of bars (0.01)."),
    ] = None,
    purge_pct: Annotated[
        float | None,
        typer.Option("--purge-pct", help="Extra gap before each test block, share of bars (0)."),
    ] = None,
    grid: Annotated[
        Grid,
        typer.Option(
            "--grid", help="Parameter grid: small (4 trials, gives PBO) or none (1 trial)."
        ),
    ] = Grid.small,
    model_name: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Name whose trials DSR counts: every configuration backtested under it, "
            "recorded in MLflow (default: <feature-set>-<label>).",
        ),
    ] = None,
    record_trials: Annotated[
        bool,
        typer.Option(
            "--trials/--no-trials",
            help="Record this run's configurations as trials and deflate DSR by all of them.",
        ),
    ] = True,
    seed: Annotated[
        int | None, typer.Option("--seed", help="LightGBM seed (default: [lightgbm] seed, 42).")
    ] = None,
    min_sharpe: Annotated[
        float | None, typer.Option("--min-sharpe", help="Gate: annualized Sharpe (1.2).")
    ] = None,
    min_psr: Annotated[float | None, typer.Option("--min-psr", help="Gate: PSR (0.95).")] = None,
    max_drawdown: Annotated[
        float | None,
        typer.Option("--max-drawdown", help="Gate: worst drawdown, negative fraction (-0.20)."),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="TOML file overriding the embedded defaults.")
    ] = None,
    report_dir: Annotated[
        str | None,
        typer.Option("--report-dir", help="Report directory (default: $QCLI_HOME/reports/...)."),
    ] = None,
    executor: Annotated[
        Executor,
        typer.Option(
            "--executor",
            help="Run the fits locally (a thread per core, QCLI_FIT_THREADS) or on Ray.",
        ),
    ] = Executor.local,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster address (with ray).")
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Backtest a LightGBM model on stored features with combinatorial purged CV, net of costs.

    Each CPCV split trains a fresh model on purged, embargoed rows and
    predicts its test groups; predictions recombine into k/N * C(N, k)
    backtest paths. Strategy: the [strategy] construction (sign, rank
    long/short or vol_target), rebalanced every label horizon (5 bars for
    fwd_return_5d), net of the [costs] commission, half-spread, slippage
    and borrow. The gates judge the median net-Sharpe path; DSR counts
    every configuration recorded under --model, PBO the grid's.

    Exit code 0 when the gates pass, 1 when they fail (reasons on stderr,
    the JSON result still on stdout with --json), 2 on bad input.

    Examples:

        qcli backtest cpcv

        qcli backtest cpcv --label fwd_return_1d --n-groups 8 --grid none --json

        qcli backtest cpcv --config costs.toml --model momentum-v2

        qcli backtest cpcv --min-sharpe 1.0 --max-drawdown -0.25 --report-dir ./bt
    """
    with progress(json_mode) as bar:
        task = bar.add_task("CPCV splits", total=None)
        result = backtest_stored_features(
            feature_set=feature_set,
            label=label,
            model_name=model_name if record_trials else None,
            record_trials=record_trials,
            cfg=load_config(config),
            cpcv={
                "n_groups": n_groups,
                "n_test_groups": n_test_groups,
                "embargo_pct": embargo_pct,
                "purge_pct": purge_pct,
            },
            grid=grid.value,
            seed=seed,
            gate_overrides={
                "min_sharpe": min_sharpe,
                "min_psr": min_psr,
                "max_drawdown": max_drawdown,
            },
            executor=executor.value,
            ray_address=ray_address,
            report_dir=report_dir,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    finish(result, json_mode, _render(result.to_dict()))
