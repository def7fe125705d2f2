"""The backtest of a stored feature set: what ``qcli backtest cpcv`` runs.

Loads ``symbol, ts, <features>, label, label_end`` with
:func:`quantcli.features.dataset.load_training_frame`, adds ``fwd_return_1d`` (the next bar's
return, the period return of the strategy), backtests with the ``[lightgbm]`` parameters of the
config (over a grid with ``grid="small"``), gates with ``[gates]``, and writes the report
directory (default ``$QCLI_HOME/reports/backtest-<id>/``, ``<id>`` a content hash).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from quantcli.backtest.cpcv import CombinatorialPurgedCV
from quantcli.backtest.engine import SMALL_GRID, LightGBMFactory, run_cpcv_backtest
from quantcli.backtest.gates import BacktestValidator
from quantcli.backtest.report import report_id, write_report
from quantcli.config import reports_dir
from quantcli.errors import InputError, NotFoundError

GRIDS: dict[str, list[dict[str, Any]]] = {"none": [{}], "small": SMALL_GRID}


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


def backtest_stored_features(
    *,
    feature_set: str,
    label: str,
    cfg: dict[str, dict[str, Any]],
    grid: str = "none",
    seed: int = 42,
    gate_overrides: dict[str, float | None] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    report_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the CPCV backtest of the stored features; the result dict with ``report`` paths."""
    if grid not in GRIDS:
        raise InputError(f"unknown --grid '{grid}'", hint="use --grid none or --grid small")
    c = cfg["cpcv"]
    cv = CombinatorialPurgedCV(
        n_groups=c["n_groups"],
        n_test_groups=c["n_test_groups"],
        embargo_pct=c["embargo_pct"],
        purge_pct=c["purge_pct"],
    )
    validator = BacktestValidator.from_config(cfg["gates"], **(gate_overrides or {}))
    frame, names = load_backtest_frame(feature_set, label)
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
    )
    out_dir = Path(report_dir) if report_dir else reports_dir() / f"backtest-{report_id(result)}"
    files = write_report(result, out_dir)
    out = result.to_dict()
    out["feature_set"], out["label"], out["grid_name"] = feature_set, label, grid
    out["report"] = {"dir": str(out_dir), **files}
    out["passed"] = result.passed
    return out
