"""The CPCV backtest of a model on a training frame.

For every configuration of a (small) parameter grid and every CPCV split, a fresh model is fit on
the split's purged training rows and predicts its test rows. Each (split, configuration) fit is
the pure top-level function :func:`fit_predict_split`, mapped through an executor
(:func:`quantcli.scale.get_executor`), so local and Ray runs give the same numbers.

Test predictions recombine into ``n_paths`` full backtest paths
(:meth:`CombinatorialPurgedCV.path_splits`); each path becomes per-period strategy returns,
gross and net of costs, by the rule of :mod:`quantcli.backtest.strategy` (the label horizon is
the holding period; positions from :mod:`quantcli.backtest.portfolio`; costs from
:mod:`quantcli.backtest.costs`). Every statistic, the selection and the gates use the **net**
returns; the gross figures are reported beside them. Then:

* the **selected configuration** is the one with the highest median path net Sharpe ratio (this
  in-sample choice is what DSR and PBO correct for);
* the **gated path** is its median path: the path whose net Sharpe ratio is the lower median
  of the ``n_paths`` paths. :class:`BacktestValidator` gates it on Sharpe, PSR and drawdown;
* **DSR** deflates the gated path's per-period Sharpe ratio with ``SR0`` from the Sharpe ratios
  of the trials: each configuration's median path (:mod:`quantcli.backtest.trials` adds the
  configurations tried earlier under the same model name);
* **PBO** (CSCV) runs on the configurations' mean-path net returns, when there are at least two
  (:data:`SMALL_GRID` has four).

The model is the caller's ``model_factory``: this package evaluates, it fits nothing of its own
(:func:`quantcli.models.backtest.run_cpcv_backtest` supplies quantcli's LightGBM).

Periods: with a per-bar return column (``return_col``, default ``fwd_return_1d``) each period
is one bar and ``periods_per_year`` annualizes; without it each period is ``h`` bars (``h`` the
label horizon) earning the label, annualized with ``periods_per_year / h``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl

from quantcli.backtest import stats
from quantcli.backtest.costs import CostModel
from quantcli.backtest.cpcv import CombinatorialPurgedCV
from quantcli.backtest.gates import BacktestValidator
from quantcli.backtest.paths import (
    COST_KEYS,
    Periods,
    config_paths,
    grid_summary,
    median_sr,
    path_metrics_of,
    path_summary,
    pbo_of,
)
from quantcli.backtest.portfolio import Construction
from quantcli.errors import InputError
from quantcli.frequency import TRADING_DAYS, default_periods_per_year
from quantcli.results import Result
from quantcli.scale import fit_threads, get_executor

# The default grid (`--grid small`) of the LightGBM model: the trials DSR and PBO account for.
SMALL_GRID: list[dict[str, Any]] = [
    {"num_leaves": leaves, "learning_rate": lr} for leaves in (7, 31) for lr in (0.03, 0.1)
]


@dataclass(frozen=True)
class SplitTask:
    """One fit: configuration ``config`` (``params``) on CPCV split ``split``."""

    split: int
    config: int
    params: dict[str, Any]
    train: np.ndarray
    test: np.ndarray
    X: np.ndarray
    y: np.ndarray
    model_factory: Callable[[dict[str, Any]], Any]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (average ranks for ties); nan when either side is constant."""
    if a.size < 2 or np.ptp(a) == 0.0 or np.ptp(b) == 0.0:
        return math.nan
    from scipy.stats import rankdata

    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def fit_predict_split(task: SplitTask) -> dict[str, Any]:
    """Fit a fresh model on the task's training rows, predict its test rows, score the fold.

    Returns ``split``, ``config``, ``n_train``, ``n_test``, ``ic`` (Spearman rank correlation of
    prediction and label on the test rows), ``rmse`` (of the label, its unit), ``hit_rate``
    (share of test rows where the prediction has the label's sign) and ``predictions``.
    """
    model = task.model_factory(task.params)
    model.fit(task.X[task.train], task.y[task.train])
    pred = np.asarray(model.predict(task.X[task.test]), dtype=np.float64)
    y_test = task.y[task.test]
    return {
        "split": task.split,
        "config": task.config,
        "n_train": int(task.train.size),
        "n_test": int(task.test.size),
        "ic": _spearman(pred, y_test),
        "rmse": float(np.sqrt(np.mean((pred - y_test) ** 2))),
        "hit_rate": float(np.mean(np.sign(pred) == np.sign(y_test))),
        "predictions": pred,
    }


@dataclass(frozen=True, kw_only=True)
class BacktestResult(Result):
    """Everything a CPCV backtest produced (arrays for the selected configuration).

    ``path_returns`` is ``(n_paths, n_periods)`` per-period strategy returns **net of costs**
    at ``period_ts``; ``gross_path_returns`` the same before costs, ``path_turnover`` the
    traded fraction of capital and ``path_costs`` the trading and borrow costs per period;
    ``path_predictions`` is ``(n_paths, n_rows)`` in the frame's (ts, symbol)
    order; ``fold_metrics`` has one dict per fit (split x configuration, keys ``split``,
    ``config``, ``n_train``, ``n_test``, ``ic``, ``rmse``, ``hit_rate``, ``test_groups``),
    ``grid`` one summary per configuration; ``metrics`` are the aggregate metrics of the
    selected configuration. As every :class:`~quantcli.Result`, ``passed`` and ``reasons`` are
    the gates' verdict and ``raise_if_failed()`` raises it (exit code 1).
    """

    cv: dict[str, Any]
    configs: list[dict[str, Any]]
    selected_config: int
    fold_metrics: list[dict[str, Any]]
    grid: list[dict[str, Any]]
    period_ts: np.ndarray
    path_returns: np.ndarray
    path_predictions: np.ndarray
    path_metrics: list[dict[str, Any]]
    metrics: dict[str, Any]
    thresholds: dict[str, float]
    strategy: dict[str, Any]
    seed: int | None = None
    gross_path_returns: np.ndarray | None = None
    path_turnover: np.ndarray | None = None
    path_costs: np.ndarray | None = None

    failure_message: ClassVar[str] = "backtest gates failed"

    def to_dict(self, include_series: bool = False) -> dict[str, Any]:
        """A JSON-able summary; ``include_series`` adds the per-path return series (net, and
        gross)."""
        out: dict[str, Any] = {
            "cv": self.cv,
            "strategy": self.strategy,
            "seed": self.seed,
            "configs": self.configs,
            "selected_config": self.selected_config,
            "selected_params": self.configs[self.selected_config],
            "metrics": self.metrics,
            "paths": self.path_metrics,
            "fold_metrics": self.fold_metrics,
            "grid": self.grid,
            "verdict": {
                "passed": self.passed,
                "reasons": list(self.reasons),
                "thresholds": self.thresholds,
            },
        }
        if include_series:
            out["period_ts"] = [str(t) for t in self.period_ts]
            out["path_returns"] = self.path_returns.tolist()
            if self.gross_path_returns is not None:
                out["gross_path_returns"] = self.gross_path_returns.tolist()
        return out


def _check_frame(frame: pl.DataFrame, feature_names: Sequence[str], return_col: str) -> None:
    if not isinstance(frame, pl.DataFrame):
        raise InputError(f"`frame` must be a polars DataFrame, got {type(frame).__name__}")
    needed = ["symbol", "ts", "label", "label_end", *feature_names]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(
            f"the training frame lacks column(s) {missing}",
            hint="use quantcli.features.dataset.load_training_frame(...)",
        )
    if not feature_names:
        raise InputError("`feature_names` is empty: the model needs at least one feature")
    for col in ("label", *([return_col] if return_col in frame.columns else [])):
        s = frame[col]
        bad = s.is_null() | (s.is_nan() if s.dtype.is_float() else pl.repeat(False, len(s)))
        if bad.any():
            raise InputError(
                f"column `{col}` has {int(bad.sum())} null/NaN value(s) (first at row "
                f"{int(bad.arg_true()[0])})",
                hint="drop unlabeled rows (each symbol's last horizon bars) first",
            )


def _label_horizon(ts: np.ndarray, label_end: np.ndarray) -> int:
    """The label horizon in bars: median of (bar of label_end - bar of ts) over known bars."""
    uniq = np.unique(ts)
    pos_end = np.searchsorted(uniq, label_end)
    known = (pos_end < uniq.size) & (uniq[np.minimum(pos_end, uniq.size - 1)] == label_end)
    if not known.any():
        return 1
    steps = pos_end[known] - np.searchsorted(uniq, ts[known])
    return max(int(np.median(steps)), 1)


def run_cpcv_backtest(
    frame: pl.DataFrame,
    feature_names: Sequence[str],
    *,
    model_factory: Callable[[dict[str, Any]], Any] | None = None,
    cv: CombinatorialPurgedCV | None = None,
    param_grid: Sequence[dict[str, Any]] | None = None,
    gates: dict[str, Any] | BacktestValidator | None = None,
    return_col: str = "fwd_return_1d",
    costs: CostModel | dict[str, Any] | None = None,
    construction: Construction | dict[str, Any] | None = None,
    periods_per_year: float | None = None,
    horizon: int | None = None,
    executor: Any = "local",
    ray_address: str | None = None,
    seed: int | None = 42,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """CPCV-backtest a model on ``frame``, net of costs, and gate the result.

    Parameters
    ----------
    frame
        ``symbol, ts, <features>, label, label_end`` (as
        :func:`quantcli.features.dataset.load_training_frame` returns it), optionally with the
        per-bar return column ``return_col`` and ``high, low, close`` (for ATR slippage);
        sorted here by ``(ts, symbol)``.
    feature_names
        The model inputs, in order.
    model_factory
        ``model_factory(params) -> regressor`` with ``fit(X, y)`` / ``predict(X)``; picklable
        for Ray. Required here; :func:`quantcli.run_cpcv_backtest` defaults to LightGBM.
    cv
        The splitter; default ``CombinatorialPurgedCV()`` (N=10, k=2, 1 % embargo).
    param_grid
        The configurations tried (each passed to ``model_factory``); default ``[{}]``.
    gates
        A ``[gates]`` dict or a :class:`BacktestValidator`; default thresholds otherwise.
    return_col
        The return a position earns from one bar to the next (a fraction); see the module doc
        for what happens without it.
    costs, construction
        A :class:`CostModel` / :class:`Construction` or a ``[costs]`` / ``[strategy]`` dict;
        default the config's defaults. ``CostModel.zero()`` gives the gross backtest.
    periods_per_year
        Bars per year of the feature set (its declaration's ``periods_per_year``); default
        inferred from the median spacing of the timestamps by the convention of
        :func:`quantcli.frequency.default_periods_per_year` (daily bars: 252).
    horizon
        The label horizon in bars, the holding period; default from ``label_end``. When given
        it must agree with ``label_end``.
    executor, ray_address
        ``"local"``, ``"ray"`` or an executor object (:mod:`quantcli.scale`).
    seed
        The factory's seed, recorded in the result.
    progress
        ``progress(done, total)`` after each finished fit.
    """
    feature_names = list(feature_names)
    _check_frame(frame, feature_names, return_col)
    if model_factory is None:
        raise InputError(
            "`model_factory` is required: quantcli.backtest fits no model of its own",
            hint="pass model_factory=..., or call quantcli.run_cpcv_backtest (LightGBM default)",
        )
    cv = cv or CombinatorialPurgedCV()
    configs = [dict(p) for p in (param_grid or [{}])]
    if not isinstance(gates, BacktestValidator):
        gates = BacktestValidator.from_config(dict(gates or {}))
    if not isinstance(costs, CostModel):
        costs = CostModel.from_config(costs)
    if not isinstance(construction, Construction):
        construction = Construction.from_config(construction)
    bars_per_year = _checked_bars_per_year(frame["ts"], periods_per_year)

    frame = frame.sort("ts", "symbol", maintain_order=True)
    X = frame.select(feature_names).to_numpy().astype(np.float64, copy=False)
    y = frame["label"].to_numpy().astype(np.float64)
    ts = frame["ts"].to_numpy()
    label_h = _label_horizon(_ns(ts), _ns(frame["label_end"].to_numpy()))
    if horizon is not None and int(horizon) != label_h:
        raise InputError(
            f"`horizon={horizon}` bars disagrees with the label, which ends {label_h} bar(s) "
            "after its timestamp",
            hint="the holding period is the label horizon: pass the label's horizon or none",
        )
    splits = list(cv.split(frame, timestamps=frame["ts"], label_end=frame["label_end"]))
    tasks = [
        SplitTask(s, c, configs[c], train, test, X, y, model_factory)
        for s, (train, test) in enumerate(splits)
        for c in range(len(configs))
    ]
    outcomes = _fit_all(tasks, executor, ray_address, progress)

    periods = Periods.of(frame, y, label_h, return_col, bars_per_year, costs, construction)
    groups = cv.sample_groups(frame, timestamps=frame["ts"])
    by_config = [
        config_paths(c, outcomes, splits, cv, groups, periods) for c in range(len(configs))
    ]
    return _assemble(cv, configs, splits, outcomes, by_config, periods, gates, seed)


def _checked_bars_per_year(ts: pl.Series, periods_per_year: float | None) -> float:
    """``periods_per_year`` (checked positive), else inferred from the timestamps."""
    bars_per_year = _bars_per_year(ts) if periods_per_year is None else float(periods_per_year)
    if not (math.isfinite(bars_per_year) and bars_per_year > 0):
        raise InputError(f"`periods_per_year` must be positive, got `{periods_per_year}`.")
    return bars_per_year


def _fit_all(
    tasks: list[SplitTask],
    executor: Any,
    ray_address: str | None,
    progress: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    """Every fit through the executor, in task order; ``progress(done, total)`` after each."""
    done = [0]

    def on_done(_: int) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], len(tasks))

    if hasattr(executor, "map"):
        runner = executor
    elif executor == "local":  # the fits release the GIL: one thread per core
        runner = get_executor("local", ray_address, workers=fit_threads())
    else:
        runner = get_executor(executor, ray_address)
    return runner.map(fit_predict_split, tasks, on_done=on_done)


def _assemble(cv, configs, splits, outcomes, by_config, periods, validator, seed):
    """Select the configuration, gate its median path, deflate, and build the result."""
    ppy = periods.ppy
    selected = int(np.argmax([median_sr(b["sr"]) for b in by_config]))
    best = by_config[selected]
    pnl = best["pnl"]
    n_paths = pnl.net.shape[0]
    order = np.argsort(np.where(np.isfinite(best["sr"]), best["sr"], -np.inf), kind="stable")
    gated = int(order[(n_paths - 1) // 2])  # the lower median path
    passed, gate_metrics = BacktestValidator(
        validator.min_sharpe, validator.min_psr, validator.max_drawdown, ppy
    ).validate_model(pnl.net[gated])
    reasons = gate_metrics.pop("reasons")
    thresholds = gate_metrics.pop("thresholds")
    for key in ("passed", "status", "dsr", "n_trials"):
        gate_metrics.pop(key, None)
    trial_srs = [s for s in (median_sr(b["sr"]) for b in by_config) if math.isfinite(s)]
    dsr = stats.deflated_sharpe_ratio(
        gate_metrics["sharpe_per_period"],
        trial_srs,
        pnl.net.shape[1],
        gate_metrics["skew"],
        gate_metrics["kurtosis"],
    )
    pbo = pbo_of(by_config)
    path_metrics = [path_metrics_of(p, pnl, ppy) for p in range(n_paths)]
    folds = [
        {k: v for k, v in o.items() if k != "predictions"}
        | {"test_groups": list(cv.test_groups[o["split"]])}
        for o in outcomes
    ]
    metrics = {
        **gate_metrics,
        "dsr": dsr,
        "expected_max_sharpe_per_period": stats.expected_max_sharpe(trial_srs),
        "pbo": None if pbo is None else pbo["pbo"],
        "gated_path": gated,
        **{k: path_metrics[gated][k] for k in COST_KEYS},
        **path_summary(path_metrics, [f for f in folds if f["config"] == selected]),
        "n_paths": n_paths,
        "n_splits": len(splits),
        "n_configs": len(configs),
        "n_rows": int(best["preds"].shape[1]),
        "n_trials": len(trial_srs),
        "n_prior_trials": 0,
    }
    return BacktestResult(
        cv={
            "n_groups": cv.n_groups,
            "n_test_groups": cv.n_test_groups,
            "embargo_pct": cv.embargo_pct,
            "purge_pct": cv.purge_pct,
            "n_splits": len(splits),
            "n_paths": n_paths,
        },
        configs=configs,
        selected_config=selected,
        fold_metrics=folds,
        grid=grid_summary(by_config, configs, outcomes, ppy),
        period_ts=periods.period_ts,
        path_returns=pnl.net,
        path_predictions=best["preds"],
        path_metrics=path_metrics,
        metrics=metrics,
        passed=passed,
        reasons=reasons,
        thresholds=thresholds,
        strategy={
            "rule": periods.strategy.describe(),
            "construction": periods.strategy.construction.to_dict(),
            "costs": periods.strategy.costs.to_dict(),
            "return_source": periods.source,
            "label_horizon_bars": periods.label_h,
            "holding_bars": periods.label_h,
            "rebalance_every_bars": periods.label_h,
            "periods_per_year": ppy,
            "pbo": pbo,
        },
        seed=seed,
        gross_path_returns=pnl.gross,
        path_turnover=pnl.turnover,
        path_costs=pnl.trading_cost + pnl.borrow_cost,
    )


def _bars_per_year(ts: pl.Series) -> float:
    """Periods per year implied by the median spacing of the distinct timestamps (a calendar
    gap, e.g. a weekend, does not move the median of daily bars off one day)."""
    uniq = np.unique(_ns(ts.to_numpy()))
    if uniq.size < 2:
        return float(TRADING_DAYS)
    step_ns = float(np.median(np.diff(uniq)))
    return default_periods_per_year(timedelta(microseconds=step_ns / 1000.0))


def _ns(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype("datetime64[ns]").view(np.int64)
