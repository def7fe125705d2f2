"""The backtest of a stored feature set: what ``qcli backtest cpcv`` runs.

Loads ``symbol, ts, <features>, label, label_end`` with
:func:`quantcli.features.dataset.load_training_frame`, adds ``fwd_return_1d`` (the next bar's
return: the strategy's per-bar return), backtests with the ``[lightgbm]`` parameters of the
config over a grid (default ``small``, so PBO is always computed), net of ``[costs]``, with the
``[strategy]`` construction, annualized with the feature set's ``periods_per_year``, gates with
``[gates]``, deflates DSR by every trial recorded under the model name
(:mod:`quantcli.backtest.trials`) and writes the report directory (default
``$QCLI_HOME/reports/backtest-<id>/``, ``<id>`` a content hash).

The trainer's backtest shares the pieces: :func:`training_grid` (``[train] grid``: the
configured model and its variations), :func:`with_selected_params` (the selected configuration,
the one registered) and :func:`pbo_statement`."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from quantcli.backtest.costs import CostModel
from quantcli.backtest.cpcv import CombinatorialPurgedCV
from quantcli.backtest.engine import SMALL_GRID, LightGBMFactory, run_cpcv_backtest
from quantcli.backtest.gates import BacktestValidator
from quantcli.backtest.portfolio import Construction
from quantcli.backtest.report import report_id, write_report
from quantcli.backtest.trials import TrialLog, check_trial_name, record_and_deflate
from quantcli.config import reports_dir
from quantcli.errors import InputError, NotFoundError

GRIDS: dict[str, list[dict[str, Any]]] = {"none": [{}], "small": SMALL_GRID}

#: The values of ``[train] grid``: the configurations the training backtest tries.
TRAIN_GRIDS = ("small", "none")
# the MLP's variations: its L2 penalty a decade either side of the configured one
_MLP_ALPHA_STEPS = (0.1, 10.0)


def training_grid(factory: Any, grid: str = "small") -> list[dict[str, Any]]:
    """The configurations the trainer's CPCV backtest tries, as ``factory(params)`` overrides.

    The configured parameters (``{}``) come first, so a tie in median path net Sharpe keeps
    them. ``grid = "small"`` adds, for a LightGBM model (or the ensemble's LightGBM member),
    each :data:`SMALL_GRID` entry that differs from the configured values, and for an MLP the
    configured ``alpha`` divided and multiplied by 10. ``"none"`` (or a model whose parameters
    quantcli cannot vary: an ensemble object, an unknown factory) is the one configuration.
    """
    if grid not in TRAIN_GRIDS:
        raise InputError(
            f"unknown [train] grid '{grid}'", hint=f"use one of: {', '.join(TRAIN_GRIDS)}"
        )
    if grid == "none":
        return [{}]
    from quantcli.models.estimators import lgbm_params, mlp_params

    kind = getattr(factory, "kind", None)
    estimator = getattr(factory, "estimator", None)
    params = getattr(factory, "params", None)
    out: list[dict[str, Any]] = [{}]
    if kind == "lgbm":
        base = estimator.get_params() if estimator is not None else lgbm_params(params)
        out += [g for g in SMALL_GRID if any(base.get(k) != v for k, v in g.items())]
    elif kind == "ensemble" and estimator is None and isinstance(params, dict):
        member = dict(params.get("lgbm") or {})
        base = lgbm_params(member)
        out += [
            {"lgbm": {**member, **g}}
            for g in SMALL_GRID
            if any(base.get(k) != v for k, v in g.items())
        ]
    elif kind == "mlp":
        if estimator is not None:
            alpha, key = float(estimator.get_params()["mlp__alpha"]), "mlp__alpha"
        else:
            alpha, key = float(mlp_params(params)["alpha"]), "alpha"
        if alpha > 0:  # no penalty has no decade either side
            out += [{key: alpha * step} for step in _MLP_ALPHA_STEPS]
    return out


def with_selected_params(factory: Any, params: dict[str, Any]) -> Any:
    """A copy of ``factory`` whose own parameters are the selected configuration's: what the
    trainer refits, logs and registers, so the gated backtest judges the registered model."""
    import copy

    if not params:
        return factory
    chosen = copy.copy(factory)
    if getattr(factory, "estimator", None) is not None:
        chosen.estimator = factory(params)  # a fresh copy with the params applied
    chosen.params = {**(getattr(factory, "params", None) or {}), **params}
    return chosen


def pbo_statement(metrics: dict[str, Any]) -> str:
    """``PBO 0.25 over 5 configurations``, or ``PBO n/a`` with the reason."""
    pbo, n = metrics.get("pbo"), int(metrics.get("n_configs") or 1)
    if isinstance(pbo, int | float) and math.isfinite(pbo):
        return f"PBO {pbo:.2f} over {n} configurations"
    if n < 2:
        return "PBO n/a: one configuration tried (grid none)"
    return f"PBO n/a: too few periods to split {n} configurations' returns into CSCV blocks"


def load_backtest_frame(
    feature_set: str = "technical_v1", label: str = "fwd_return_5d", store: Any = None
) -> tuple[pl.DataFrame, list[str]]:
    """The training frame of ``feature_set`` / ``label`` plus ``fwd_return_1d``; feature names."""
    from quantcli.features.dataset import load_training_frame
    from quantcli.features.definitions import feature_names
    from quantcli.store.offline import OfflineStore

    if store is None:
        with OfflineStore(read_only=True) as own:
            return load_backtest_frame(feature_set, label, own)
    frame = load_training_frame(store, feature_set, label)
    if label == "fwd_return_1d":
        frame = frame.with_columns(fwd_return_1d=pl.col("label"))
    else:
        try:
            next_bar = load_training_frame(store, feature_set, "fwd_return_1d")
        except NotFoundError:  # not declared: the engine trades the label, non-overlapping
            next_bar = None
        if next_bar is not None:
            next_bar = next_bar.select("symbol", "ts", fwd_return_1d="label")
            frame = frame.join(next_bar, on=["symbol", "ts"], how="left")
    if frame.height == 0:
        raise InputError(
            f"no labeled rows in feature set '{feature_set}'",
            hint="ingest more bars, then run `qcli features build`",
        )
    return frame.sort("ts", "symbol"), feature_names(feature_set)


def _periods_per_year(feature_set: str) -> float | None:
    """The declared bars per year of ``feature_set``; ``None`` (the daily convention) for a name
    with no declaration (a Python caller's own frame)."""
    from quantcli.frequency import periods_per_year

    try:
        return periods_per_year(feature_set)
    except NotFoundError:
        return None


def backtest_options(cfg: dict[str, dict[str, Any]], feature_set: str) -> dict[str, Any]:
    """The keyword arguments of :func:`run_cpcv_backtest` a config and a feature set fix:
    ``costs`` (``[costs]``), ``construction`` (``[strategy]``) and ``periods_per_year`` (the
    feature set's declaration)."""
    return {
        "costs": CostModel.from_config(cfg.get("costs")),
        "construction": Construction.from_config(cfg.get("strategy")),
        "periods_per_year": _periods_per_year(feature_set),
    }


def trial_context(
    cfg: dict[str, dict[str, Any]], feature_set: str, label: str, model: Any, seed: int
) -> dict[str, Any]:
    """What, besides a grid entry's params, defines a trial: the data, model, costs, strategy
    and CV (:func:`quantcli.backtest.trials.trial_id` hashes it)."""
    return {
        "feature_set": feature_set,
        "label": label,
        "model": model,
        "seed": seed,
        "cpcv": dict(cfg["cpcv"]),
        "costs": CostModel.from_config(cfg.get("costs")).to_dict(),
        "strategy": Construction.from_config(cfg.get("strategy")).to_dict(),
    }


def _with_prices(frame: pl.DataFrame, store: Any = None) -> pl.DataFrame:
    """``frame`` with the bars' ``high, low, close`` (for ATR slippage)."""
    from quantcli.store.offline import OfflineStore

    if store is None:
        with OfflineStore(read_only=True) as own:
            return _with_prices(frame, own)
    from quantcli import resources

    symbols = frame["symbol"].unique().sort().to_list()
    bars = store.con.sql(resources.sql("features_read_bars"), params=[symbols[0], symbols[-1]])
    prices = bars.pl().select("symbol", "ts", "high", "low", "close")
    return frame.join(prices, on=["symbol", "ts"], how="left").sort("ts", "symbol")


def backtest_stored_features(
    *,
    feature_set: str,
    label: str,
    cfg: dict[str, dict[str, Any]],
    grid: str = "small",
    seed: int = 42,
    gate_overrides: dict[str, float | None] | None = None,
    model_name: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    report_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the CPCV backtest of the stored features; the result dict with ``report`` paths.

    ``model_name``: record this run's configurations as trials of that name in MLflow and
    deflate DSR by every trial recorded under it (``None``: only this run's grid counts).
    """
    if grid not in GRIDS:
        raise InputError(f"unknown --grid '{grid}'", hint="use --grid small or --grid none")
    c = cfg["cpcv"]
    cv = CombinatorialPurgedCV(
        n_groups=c["n_groups"],
        n_test_groups=c["n_test_groups"],
        embargo_pct=c["embargo_pct"],
        purge_pct=c["purge_pct"],
    )
    validator = BacktestValidator.from_config(cfg["gates"], **(gate_overrides or {}))
    if model_name is not None:
        check_trial_name(model_name)
    options = backtest_options(cfg, feature_set)
    frame, names = load_backtest_frame(feature_set, label)
    if options["costs"].slippage == "atr":
        frame = _with_prices(frame)
    result = run_cpcv_backtest(
        frame,
        names,
        model_factory=LightGBMFactory(cfg["lightgbm"], seed=seed),
        cv=cv,
        param_grid=GRIDS[grid],
        gates=validator,
        executor=executor,
        ray_address=ray_address,
        seed=seed,
        progress=progress,
        **options,
    )
    if model_name is not None:
        lgbm = {k: v for k, v in cfg["lightgbm"].items() if k != "seed"}
        context = trial_context(cfg, feature_set, label, {"lgbm": lgbm}, seed)
        record_and_deflate(TrialLog(), model_name, result, context)
    out_dir = Path(report_dir) if report_dir else reports_dir() / f"backtest-{report_id(result)}"
    files = write_report(result, out_dir)
    out = result.to_dict()
    out["feature_set"], out["label"], out["grid_name"] = feature_set, label, grid
    out["report"] = {"dir": str(out_dir), **files}
    out["passed"] = result.passed
    return out
