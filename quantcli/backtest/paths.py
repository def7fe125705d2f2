"""The CPCV paths of a backtest: the periods traded, each configuration's recombined paths,
their strategy returns and the statistics the engine reports of them.

:func:`quantcli.backtest.engine.run_cpcv_backtest` fits the models; this module turns the
test predictions into ``n_paths`` full backtest paths (:meth:`CombinatorialPurgedCV.path_splits`)
and each path into per-period net and gross returns by the rule of
:mod:`quantcli.backtest.strategy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from quantcli.backtest import stats
from quantcli.backtest.costs import atr_over_close
from quantcli.backtest.cpcv import CombinatorialPurgedCV
from quantcli.backtest.pbo import probability_of_backtest_overfitting
from quantcli.backtest.strategy import Panel, PathReturns, Strategy, break_even_bps, period_starts
from quantcli.errors import InputError


@dataclass(frozen=True)
class Periods:
    """The periods the strategy trades: bars with a per-bar return column, else ``h``-bar
    periods of the label (``h`` the label horizon); their returns, costs and timestamps."""

    rows: np.ndarray  # the frame rows that start a period
    sub: Panel  # (period, symbol) positions of those rows
    returns: np.ndarray  # (n_periods, n_symbols) period returns
    period_ts: np.ndarray
    unit_cost: np.ndarray  # cost per unit traded, known at each period's start
    strategy: Strategy
    source: str  # the return column, or "label"
    label_h: int

    @property
    def ppy(self) -> float:
        return self.strategy.periods_per_year

    @classmethod
    def of(cls, frame, y, label_h, return_col, bars_per_year, costs, construction) -> Periods:
        ts = frame["ts"].to_numpy()
        panel = Panel.from_keys(ts, frame["symbol"].rank("dense").to_numpy().astype(np.int64) - 1)
        if return_col in frame.columns:
            rows = np.arange(frame.height)
            period_ret = frame[return_col].to_numpy().astype(np.float64)
            step, hold, source = 1, label_h, return_col
        else:
            rows = np.flatnonzero(panel.bar % label_h == 0)
            period_ret = y
            step, hold, source = label_h, 1, "label"
        n_periods = -(-panel.n_bars // step)
        sub = Panel(panel.bar[rows] // step, panel.symbol[rows], n_periods, panel.n_symbols)
        returns = sub.dense(period_ret[rows])
        period_ts = ts[rows][period_starts(ts[rows])[:-1]]
        strategy = Strategy(construction, costs, hold, bars_per_year / step)
        # returns known at a period's start: the previous period's (per bar for the slippage)
        known = np.vstack([np.full((1, sub.n_symbols), np.nan), returns[:-1]]) / math.sqrt(step)
        atr = None
        if costs.slippage == "atr":
            atr = atr_panel(frame, panel, int(costs.slippage_window))[::step][: sub.n_bars]
        unit_cost = costs.unit_cost(known, atr)
        return cls(rows, sub, returns, period_ts, unit_cost, strategy, source, label_h)


def config_paths(
    c: int,
    outcomes: list[dict[str, Any]],
    splits: list[tuple[np.ndarray, np.ndarray]],
    cv: CombinatorialPurgedCV,
    groups: np.ndarray,
    periods: Periods,
) -> dict[str, Any]:
    """Configuration ``c``'s test predictions recombined into the CPCV paths, each path's
    strategy returns and its per-period net Sharpe ratio."""
    path_splits = cv.path_splits()
    n_paths, n_rows = path_splits.shape[0], groups.shape[0]
    preds = np.full((n_paths, n_rows), np.nan)
    for o in (o for o in outcomes if o["config"] == c):
        s = o["split"]
        full = np.full(n_rows, np.nan)
        full[splits[s][1]] = o["predictions"]
        for g in cv.test_groups[s]:
            p = int(np.flatnonzero(path_splits[:, g] == s)[0])
            mask = groups == g
            preds[p, mask] = full[mask]
    series = [
        periods.strategy.run(
            periods.sub.dense(preds[p, periods.rows]), periods.returns, periods.unit_cost
        )
        for p in range(n_paths)
    ]
    pnl = PathReturns(*(np.vstack([x[k] for x in series]) for k in range(5)))
    sr = np.array([stats.sharpe_ratio(r, periods_per_year=None) for r in pnl.net])
    return {"preds": preds, "pnl": pnl, "sr": sr}


def median_sr(sr: np.ndarray) -> float:
    """The median of the finite path Sharpe ratios; ``-inf`` when there are none."""
    finite = sr[np.isfinite(sr)]
    return float(np.median(finite)) if finite.size else -math.inf


def pbo_of(by_config: list[dict[str, Any]]) -> dict[str, Any] | None:
    """PBO by CSCV over the configurations' mean-path net returns (two or more of them)."""
    if len(by_config) < 2:
        return None
    mean_paths = np.column_stack([b["pnl"].net.mean(axis=0) for b in by_config])
    n_blocks = min(16, (mean_paths.shape[0] // 4) // 2 * 2)
    if n_blocks < 2:
        return None
    return probability_of_backtest_overfitting(mean_paths, n_blocks=n_blocks).to_dict()


def path_summary(path_metrics: list[dict[str, Any]], folds: list[dict[str, Any]]) -> dict:
    """The distribution of the paths' net and gross Sharpe ratios and drawdowns, and the
    selected configuration's fold means."""
    sharpes = np.array([m["sharpe"] for m in path_metrics])
    mdds = np.array([m["max_drawdown"] for m in path_metrics])
    return {
        **distribution("sharpe", sharpes),
        **distribution("gross_sharpe", np.array([m["gross_sharpe"] for m in path_metrics])),
        "share_paths_sharpe_positive": float(np.mean(sharpes > 0)),
        "max_drawdown_median": float(np.median(mdds)),
        "max_drawdown_worst": float(np.min(mdds)),
        "ic_mean": nanmean([f["ic"] for f in folds]),
        "rmse_mean": float(np.mean([f["rmse"] for f in folds])),
        "hit_rate_mean": float(np.mean([f["hit_rate"] for f in folds])),
    }


def grid_summary(by_config, configs, outcomes, ppy: float) -> list[dict[str, Any]]:
    """One summary per configuration: its median path net Sharpe and its folds' mean IC."""
    grid = []
    for c, b in enumerate(by_config):
        finite = b["sr"][np.isfinite(b["sr"])]
        median = median_sr(b["sr"])
        grid.append(
            {
                "config": c,
                "params": configs[c],
                "sharpe_median": median * math.sqrt(ppy) if finite.size else math.nan,
                "sharpe_per_period_median": median if finite.size else math.nan,
                "ic_mean": nanmean([o["ic"] for o in outcomes if o["config"] == c]),
            }
        )
    return grid


COST_KEYS = (
    "gross_sharpe",
    "gross_annual_return",
    "turnover_annual",
    "cost_drag_annual",
    "borrow_annual",
    "break_even_cost_bps",
    "gross_equity_final",
    "net_equity_final",
)


def path_metrics_of(p: int, pnl: PathReturns, ppy: float) -> dict[str, Any]:
    """Net statistics of path ``p`` with the gross ones, turnover and costs beside them.

    ``turnover_annual`` is the traded fraction of capital per year (one way, ``sum |dw|``);
    ``cost_drag_annual`` is ``mean(gross - net) * periods_per_year`` (trading and borrow).
    """
    s = stats.summary(pnl.net[p], ppy)
    return {
        "path": p,
        "sharpe": s["sharpe"],
        "psr": s["psr"],
        "max_drawdown": s["max_drawdown"],
        "annual_return": s["annual_return"],
        "win_rate": s["win_rate"],
        "gross_sharpe": stats.sharpe_ratio(pnl.gross[p], periods_per_year=ppy),
        "gross_annual_return": stats.annual_return(pnl.gross[p], ppy),
        "turnover_annual": float(np.mean(pnl.turnover[p])) * ppy,
        "cost_drag_annual": float(np.mean(pnl.gross[p] - pnl.net[p])) * ppy,
        "borrow_annual": float(np.mean(pnl.borrow_cost[p])) * ppy,
        "break_even_cost_bps": break_even_bps(pnl.gross[p], pnl.borrow_cost[p], pnl.turnover[p]),
        "gross_equity_final": float(np.prod(1.0 + pnl.gross[p])),
        "net_equity_final": float(np.prod(1.0 + pnl.net[p])),
    }


def atr_panel(frame: pl.DataFrame, panel: Panel, window: int) -> np.ndarray:
    missing = [c for c in ("high", "low", "close") if c not in frame.columns]
    if missing:
        raise InputError(
            f'[costs] slippage = "atr" needs column(s) {missing} in the frame',
            hint='use slippage = "volatility" or "fixed", or join the bars\' high/low/close',
        )
    cols = [panel.dense(frame[c].to_numpy().astype(np.float64)) for c in ("high", "low", "close")]
    return atr_over_close(*cols, window)


def distribution(name: str, values: np.ndarray) -> dict[str, float]:
    """Median, mean, std (ddof = 1), min and max of the finite ``values`` (nan if none)."""
    v = values[np.isfinite(values)]
    if not v.size:
        return {f"{name}_{k}": math.nan for k in ("median", "mean", "std", "min", "max")}
    return {
        f"{name}_median": float(np.median(v)),
        f"{name}_mean": float(v.mean()),
        f"{name}_std": float(v.std(ddof=1)) if v.size > 1 else math.nan,
        f"{name}_min": float(v.min()),
        f"{name}_max": float(v.max()),
    }


def nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values; nan (without numpy's warning) when there are none."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


__all__ = [
    "COST_KEYS",
    "Periods",
    "config_paths",
    "distribution",
    "grid_summary",
    "median_sr",
    "nanmean",
    "path_metrics_of",
    "path_summary",
    "pbo_of",
]
