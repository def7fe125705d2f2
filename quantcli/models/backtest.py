"""The CPCV backtest of a model: what ``qcli backtest cpcv`` and ``qcli model train`` run.

:mod:`quantcli.backtest.engine` evaluates any ``model_factory(params) -> regressor``; this module
supplies quantcli's: one :class:`~quantcli.models.estimators.ModelFactory` built from the config
(:func:`config_factory`), so the backtest and the trainer fit the same model from the same
``[lightgbm]`` / ``[mlp]`` sections and seed. It also keeps the trial log in MLflow
(:class:`~quantcli.models.trials.TrialLog`), so DSR deflates by every configuration recorded
under a model name.

* :func:`run_cpcv_backtest` -- the engine with LightGBM and :data:`SMALL_GRID` by default
  (``quantcli.run_cpcv_backtest``);
* :func:`backtest_stored_features` -- ``qcli backtest cpcv``: the stored feature set, the
  config's model over a grid, net of ``[costs]``, gated, deflated, reported (default
  ``$QCLI_HOME/reports/backtest-<id>/``, ``<id>`` a content hash);
* :func:`training_grid` and :func:`with_selected_params` -- the trainer's grid (``[train]
  grid``) and the selected configuration it refits and registers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from quantcli.backtest import engine
from quantcli.backtest.engine import SMALL_GRID, BacktestResult
from quantcli.backtest.gates import BacktestValidator
from quantcli.backtest.report import report_id, write_report
from quantcli.backtest.stored import (
    GRIDS,
    backtest_options,
    cv_from_config,
    load_backtest_frame,
    trial_context,
    with_prices,
)
from quantcli.backtest.trials import check_trial_name, deflate_by_log
from quantcli.errors import InputError
from quantcli.models.estimators import (
    LightGBMFactory,
    ModelFactory,
    check_model_kind,
    lgbm_params,
    mlp_params,
)
from quantcli.models.run_log import run_params
from quantcli.models.trials import TrialLog
from quantcli.results import Result
from quantcli.workspace import Workspace

if TYPE_CHECKING:
    from quantcli.backtest.cpcv import CombinatorialPurgedCV

#: The values of ``[train] grid``: the configurations the training backtest tries.
TRAIN_GRIDS = ("small", "none")
# the MLP's variations: its L2 penalty a decade either side of the configured one
_MLP_ALPHA_STEPS = (0.1, 10.0)


def run_cpcv_backtest(
    frame: pl.DataFrame,
    feature_names: Sequence[str],
    *,
    model_factory: Callable[[dict[str, Any]], Any] | None = None,
    param_grid: Sequence[dict[str, Any]] | None = None,
    cv: CombinatorialPurgedCV | None = None,
    seed: int | None = 42,
    **options: Any,
) -> BacktestResult:
    """:func:`quantcli.backtest.engine.run_cpcv_backtest` with quantcli's default model.

    Without ``model_factory``: :class:`~quantcli.models.estimators.LightGBMFactory` seeded with
    ``seed`` (LightGBM's own defaults, one thread, deterministic) over :data:`SMALL_GRID`, so
    PBO is computed; with a caller's factory the default grid is ``[{}]``. Every other keyword
    (``gates``, ``costs``, ``construction``, ``return_col``, ``periods_per_year``, ``horizon``,
    ``executor``, ``ray_address``, ``progress``) is the engine's.
    """
    if param_grid is None:
        param_grid = SMALL_GRID if model_factory is None else [{}]
    if model_factory is None:
        model_factory = LightGBMFactory(seed=42 if seed is None else seed)
    return engine.run_cpcv_backtest(
        frame,
        feature_names,
        model_factory=model_factory,
        param_grid=param_grid,
        cv=cv,
        seed=seed,
        **options,
    )


def config_factory(
    cfg: dict[str, dict[str, Any]],
    kind: str = "lgbm",
    seed: int | None = None,
    params: dict[str, Any] | None = None,
) -> ModelFactory:
    """The factory of model family ``kind`` the config describes: ``[lightgbm]`` (without its
    ``seed``) and ``[mlp]`` drive every member unless ``params`` are given; ``seed`` defaults to
    ``[lightgbm] seed``. The one place ``qcli backtest cpcv`` and ``qcli model train`` get
    their models from."""
    check_model_kind(kind)
    if seed is None:
        seed = int(cfg["lightgbm"].get("seed", 42))
    if params is None:
        lgbm = {k: v for k, v in cfg["lightgbm"].items() if k != "seed"}
        mlp = dict(cfg["mlp"])
        params = {"lgbm": lgbm, "mlp": mlp, "ensemble": {"lgbm": lgbm, "mlp": mlp}}[kind]
    return ModelFactory(kind, params, seed)


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
    kind = getattr(factory, "kind", None)
    estimator = getattr(factory, "estimator", None)
    params = getattr(factory, "params", None)
    out: list[dict[str, Any]] = [{}]
    if kind == "lgbm":
        if estimator is not None:
            base = estimator.get_params()
        else:
            base = lgbm_params(params, config_defaults=getattr(factory, "config_defaults", True))
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
    if not params:
        return factory
    chosen = copy.copy(factory)
    if getattr(factory, "estimator", None) is not None:
        chosen.estimator = factory(params)  # a fresh copy with the params applied
    chosen.params = {**(getattr(factory, "params", None) or {}), **params}
    return chosen


def backtest_stored_features(
    *,
    feature_set: str | None = None,
    label: str | None = None,
    cfg: dict[str, dict[str, Any]] | None = None,
    grid: str = "small",
    seed: int | None = None,
    gate_overrides: dict[str, float | None] | None = None,
    model_name: str | None = None,
    record_trials: bool = False,
    cpcv: dict[str, Any] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    report_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    workspace: Workspace | None = None,
) -> StoredBacktestResult:
    """Run the CPCV backtest of the stored features; the result with its ``report`` paths.

    ``cfg`` defaults to the workspace's config; ``feature_set``, ``label`` and ``seed`` to its
    ``[features] feature_set``, ``[label] name`` and ``[lightgbm] seed``; ``cpcv`` overrides
    keys of ``[cpcv]`` (``None`` values are ignored). ``model_name``: record this run's
    configurations as trials of that name in MLflow and deflate DSR by every trial recorded
    under it; ``record_trials`` without a name records under ``<feature_set>-<label>``
    (neither: only this run's grid counts). ``workspace``: where the store, the trials and the
    default report directory live (default :meth:`Workspace.from_env`).
    """
    if grid not in GRIDS:
        raise InputError(f"unknown --grid '{grid}'", hint="use --grid small or --grid none")
    workspace = workspace or Workspace.from_env()
    cfg = copy.deepcopy(cfg) if cfg is not None else copy.deepcopy(workspace.config)
    cfg["cpcv"].update({k: v for k, v in (cpcv or {}).items() if v is not None})
    feature_set = feature_set or cfg["features"]["feature_set"]
    label = label or cfg["label"]["name"]
    if seed is None:
        seed = int(cfg["lightgbm"].get("seed", 42))
    if record_trials and model_name is None:
        model_name = f"{feature_set}-{label}"
    cv = cv_from_config(cfg["cpcv"])
    validator = BacktestValidator.from_config(cfg["gates"], **(gate_overrides or {}))
    if model_name is not None:
        check_trial_name(model_name)
    # checked first: a bad one must not cost a whole backtest, nor leave a recorded trial
    out_dir = Path(report_dir) if report_dir else None
    if out_dir is not None:
        _check_report_dir(out_dir)
    options = backtest_options(cfg, feature_set)
    with workspace.offline(read_only=True) as store:
        frame, names = load_backtest_frame(feature_set, label, store)
        if options["costs"].slippage == "atr":
            frame = with_prices(frame, store)
    factory = config_factory(cfg, "lgbm", seed)
    result = engine.run_cpcv_backtest(
        frame,
        names,
        model_factory=factory,
        cv=cv,
        param_grid=GRIDS[grid],
        gates=validator,
        executor=executor,
        ray_address=ray_address,
        seed=seed,
        progress=progress,
        **options,
    )
    trials, log = [], None
    if model_name is not None:
        # the model described as the trainer describes it, so one configuration is one trial
        context = trial_context(cfg, feature_set, label, run_params(factory), seed)
        log = TrialLog(workspace)
        trials = deflate_by_log(log, model_name, result, context)
    if out_dir is None:
        out_dir = workspace.reports_dir / f"backtest-{report_id(result)}"
    files = write_report(result, out_dir)
    if log is not None:  # recorded once the report is written: a failed run tried nothing
        log.record(model_name, trials)
    return StoredBacktestResult(
        passed=result.passed,
        reasons=tuple(result.reasons),
        backtest=result,
        feature_set=feature_set,
        label=label,
        grid_name=grid,
        report={"dir": str(out_dir), **files},
    )


def _check_report_dir(out_dir: Path) -> None:
    """``--report-dir`` must be a folder or creatable as one (InputError naming it)."""
    for p in (out_dir, *out_dir.parents):
        if p.exists():
            if not p.is_dir():
                raise InputError(
                    f"--report-dir {out_dir}: {p} exists and is not a directory",
                    hint="give a directory (it is created when missing)",
                )
            return


@dataclass(frozen=True, kw_only=True)
class StoredBacktestResult(Result):
    """``qcli backtest cpcv``: the engine's :class:`BacktestResult` of the stored features, the
    feature set, label and grid, and the report's files (``{"dir", <name>: path}``)."""

    backtest: BacktestResult
    feature_set: str
    label: str
    grid_name: str
    report: dict[str, str]

    failure_message: ClassVar[str] = "backtest gates failed"

    def to_dict(self) -> dict[str, Any]:
        out = self.backtest.to_dict()
        out["feature_set"], out["label"], out["grid_name"] = (
            self.feature_set,
            self.label,
            self.grid_name,
        )
        out["report"] = dict(self.report)
        out["passed"] = self.passed
        return out

    @property
    def metrics(self) -> dict[str, Any]:
        return self.backtest.metrics


__all__ = [
    "TRAIN_GRIDS",
    "StoredBacktestResult",
    "backtest_stored_features",
    "config_factory",
    "run_cpcv_backtest",
    "training_grid",
    "with_selected_params",
]
