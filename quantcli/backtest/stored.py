"""The backtest of a stored feature set: what ``qcli backtest cpcv`` runs.

Loads ``symbol, ts, <features>, label, label_end`` with
:func:`quantcli.features.dataset.load_training_frame`, adds ``fwd_return_1d`` (the next bar's
return: the strategy's per-bar return), backtests with the ``[lightgbm]`` parameters of the
config over a grid (default ``small``, so PBO is always computed), net of ``[costs]``, with the
``[strategy]`` construction, annualized with the feature set's ``periods_per_year``, gates with
``[gates]``, deflates DSR by every trial recorded under the model name
(:mod:`quantcli.backtest.trials`) and writes the report directory (default
``$QCLI_HOME/reports/backtest-<id>/``, ``<id>`` a content hash).

The model-independent pieces live here: the frame, the options a config fixes, the trial context
and the PBO statement. The workflow itself (the model factory, the trial log in MLflow) is
:func:`quantcli.models.backtest.backtest_stored_features`, a layer up."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from quantcli import resources
from quantcli.backtest.costs import CostModel
from quantcli.backtest.cpcv import CombinatorialPurgedCV
from quantcli.backtest.engine import SMALL_GRID
from quantcli.backtest.portfolio import Construction
from quantcli.errors import InputError, NotFoundError
from quantcli.features.dataset import load_training_frame
from quantcli.features.definitions import feature_names, periods_per_year
from quantcli.store.offline import OfflineStore

#: The grids of ``qcli backtest cpcv --grid``.
GRIDS: dict[str, list[dict[str, Any]]] = {"none": [{}], "small": SMALL_GRID}


def cv_from_config(section: dict[str, Any]) -> CombinatorialPurgedCV:
    """The splitter a ``[cpcv]`` section describes."""
    return CombinatorialPurgedCV(
        n_groups=int(section["n_groups"]),
        n_test_groups=int(section["n_test_groups"]),
        embargo_pct=float(section["embargo_pct"]),
        purge_pct=float(section["purge_pct"]),
    )


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


def with_prices(frame: pl.DataFrame, store: Any = None) -> pl.DataFrame:
    """``frame`` with the bars' ``high, low, close`` (for ATR slippage)."""
    if store is None:
        with OfflineStore(read_only=True) as own:
            return with_prices(frame, own)
    symbols = frame["symbol"].unique().sort().to_list()
    bars = store.con.sql(resources.sql("features_read_bars"), params=[symbols[0], symbols[-1]])
    prices = bars.pl().select("symbol", "ts", "high", "low", "close")
    return frame.join(prices, on=["symbol", "ts"], how="left").sort("ts", "symbol")
