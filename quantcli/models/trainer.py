"""Training with lineage: CPCV backtest, refit on all data, one MLflow run, a registered version.

:class:`MLflowTrainer` logs, in ONE MLflow run:

* parameters (model kind and hyper-parameters, CPCV ``N``/``k``/embargo/purge, gates, seed);
* per-fold CV metrics (``cv_<metric>`` at ``step = split index``) and their mean
  (``cv_<metric>_mean``);
* the CPCV backtest's aggregate metrics (``backtest_<metric>``: Sharpe, PSR, DSR, drawdown, ...)
  and its verdict (tag ``quantcli.backtest.verdict`` = ``pass``/``fail``, reasons as JSON in
  ``quantcli.backtest.reasons``; the full result as ``backtest/result.json``);
* the dataset manifest -- sha256 of the exact training frame (see :func:`dataset_manifest`), row
  count, symbols, time range -- as an MLflow dataset input and as tags;
* feature set name and version, feature names, label, training date, quantcli version;
* the model signature (``model/signature.json``: float64 columns in input order -> one float64
  prediction) and the model refit on all rows, saved WITHOUT pickle
  (:mod:`quantcli.models.serialize`: LightGBM text, ``.npz`` + JSON) under ``model/``.

With ``register_as=NAME`` the ``model/`` files are signed and registered as a new version of
``NAME`` with alias ``staging`` (:meth:`quantcli.models.registry.ModelRegistry.register_version`).

Same data, config and seed -> the same dataset hash, the same CV metrics and the same model bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quantcli import __version__, config
from quantcli._interop import is_pandas, is_pyarrow, to_polars
from quantcli.backtest import engine
from quantcli.backtest.report import write_report
from quantcli.backtest.stored import (
    backtest_options,
    cv_from_config,
    load_backtest_frame,
    pbo_statement,
    trial_context,
)
from quantcli.backtest.trials import record_and_deflate
from quantcli.errors import GateFailedError, InputError
from quantcli.models import tags as T
from quantcli.models.backtest import config_factory, training_grid, with_selected_params
from quantcli.models.estimators import ModelFactory, check_model_kind, lgbm_params, mlp_params
from quantcli.models.registry import MODEL_ARTIFACT_PATH, ModelRegistry, is_local_store
from quantcli.models.serialize import save_model
from quantcli.models.trials import TrialLog

INDEX_COLUMNS = ("symbol", "ts", "label_end")
# the period return the CPCV strategy earns (quantcli.backtest.engine); never a model input
RETURN_COLUMN = "fwd_return_1d"
DEFAULT_EXPERIMENT = "quantcli"
#: Artifact folder of a training run holding the CPCV report (metrics, plots, path returns).
BACKTEST_ARTIFACT_PATH = "backtest"
#: The registry-stage names of MLflow's deprecated stages, mapped to quantcli's aliases.
STAGE_ALIASES = {"production": T.ALIAS_PRODUCTION, "staging": T.ALIAS_STAGING}
_log = logging.getLogger(__name__)


# -- the dataset manifest ----------------------------------------------------------------------
def frame_sha256(frame: pl.DataFrame) -> str:
    """sha256 of a frame's exact content: column names, dtypes and values, in row order.

    Datetimes hash as their integer microseconds, strings as UTF-8 joined by NUL, numbers as
    little-endian float64/int64 (nulls as NaN / a marker), so the digest does not depend on the
    Polars version's IPC layout.
    """
    h = hashlib.sha256()
    for name, dtype in frame.schema.items():
        col = frame.get_column(name)
        h.update(f"{name}:{dtype}\n".encode())
        if dtype == pl.String or dtype == pl.Categorical:
            h.update("\x00".join("\x01" if v is None else v for v in col.to_list()).encode())
        elif dtype.is_temporal():
            ints = col.dt.cast_time_unit("us").cast(pl.Int64) if dtype == pl.Datetime else col
            h.update(ints.cast(pl.Int64).fill_null(np.iinfo(np.int64).min).to_numpy().tobytes())
        elif dtype.is_integer():
            h.update(col.cast(pl.Int64).fill_null(np.iinfo(np.int64).min).to_numpy().tobytes())
        else:
            h.update(col.cast(pl.Float64).to_numpy().astype("<f8").tobytes())
    return h.hexdigest()


def dataset_manifest(frame: pl.DataFrame) -> dict[str, Any]:
    """``sha256``, ``rows``, ``symbols`` (sorted), ``start``/``end`` (ISO UTC) of a frame."""
    ts = frame.get_column("ts")
    return {
        "sha256": frame_sha256(frame),
        "rows": frame.height,
        "symbols": sorted(frame.get_column("symbol").unique().to_list()),
        "start": ts.min().isoformat() if frame.height else None,
        "end": ts.max().isoformat() if frame.height else None,
        "columns": frame.columns,
    }


# -- the result ---------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What one training run produced."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    model_kind: str
    feature_names: list[str]
    dataset: dict[str, Any]
    cv_metrics: dict[str, float]
    backtest_metrics: dict[str, Any]
    passed: bool
    reasons: list[str]
    model_files: list[str]
    registered_name: str | None = None
    version: str | None = None
    aliases: list[str] = field(default_factory=list)
    #: artifact paths of the CPCV report in the run (``backtest/equity.png``, ...)
    backtest_report: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.tracking_uri,
            "model_kind": self.model_kind,
            "name": self.registered_name,
            "version": self.version,
            "aliases": self.aliases,
            "dataset": {k: v for k, v in self.dataset.items() if k != "columns"},
            "n_features": len(self.feature_names),
            "cv_metrics": self.cv_metrics,
            "backtest_metrics": self.backtest_metrics,
            "backtest_verdict": T.PASS if self.passed else T.FAIL,
            "reasons": self.reasons,
            "model_files": self.model_files,
            "backtest_report": self.backtest_report,
        }


# -- the backtest adapter -----------------------------------------------------------------------
def _run_backtest(
    frame: pl.DataFrame,
    feature_names: list[str],
    factory: ModelFactory,
    cv_cfg: dict[str, Any],
    gates: dict[str, Any],
    seed: int,
    executor: str,
    progress: Any,
    **options: Any,
) -> tuple[dict[str, Any], Any]:
    """Run the CPCV engine (:mod:`quantcli.backtest.engine`); return (normalised dict, result).

    ``options``: costs, construction and periods per year
    (:func:`quantcli.backtest.stored.backtest_options`)."""
    cv = cv_from_config(cv_cfg)
    result = engine.run_cpcv_backtest(
        frame,
        feature_names,
        model_factory=factory,
        cv=cv,
        executor=executor,
        seed=seed,
        progress=progress,
        gates=gates,
        **options,
    )
    return _normalise_backtest(result), result


def _normalise_backtest(result: Any) -> dict[str, Any]:
    d = result.to_dict()
    metrics = d.get("metrics") or {}
    folds = d.get("fold_metrics") or d.get("folds") or []
    verdict = d.get("verdict") or {}
    passed = bool(verdict.get("passed")) if isinstance(verdict, dict) else bool(d.get("passed"))
    reasons = list(verdict.get("reasons", [])) if isinstance(verdict, dict) else []
    reasons = reasons or list(d.get("reasons") or [])
    return {"metrics": metrics, "folds": folds, "passed": passed, "reasons": reasons, "raw": d}


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            continue
        if np.isfinite(value):
            out[key] = float(value)
    return out


def _fold_metrics(folds: list[Any]) -> tuple[dict[str, list[float]], dict[str, float]]:
    per: dict[str, list[float]] = {}
    for fold in folds:
        for key, value in _scalar_metrics(fold if isinstance(fold, dict) else {}).items():
            if key in ("split", "fold", "path", "config", "n_train", "n_test"):
                continue
            per.setdefault(key, []).append(value)
    means = {f"cv_{k}_mean": float(np.mean(v)) for k, v in sorted(per.items())}
    return per, means


# -- an estimator object as the model -----------------------------------------------------------
class EstimatorFactory:
    """A fresh, unfitted copy of a user's estimator per CPCV split and for the final refit.

    quantcli serialises models without pickle, so the estimator must be one quantcli can save:
    ``lightgbm.LGBMRegressor``, a scikit-learn MLP pipeline, or an
    :class:`~quantcli.models.estimators.EnsembleRegressor` of them. ``params`` are applied
    with ``set_params`` (an ``LGBMRegressor``'s ``n_estimators``, a pipeline's
    ``mlp__alpha``, ...).
    """

    def __init__(self, estimator: Any, params: dict[str, Any] | None, seed: int) -> None:
        from quantcli.models.estimators import model_kind

        if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
            raise InputError(
                f"`model` must be a model kind ('lgbm', 'mlp', 'ensemble') or an estimator "
                f"with fit/predict, got {type(estimator).__name__}"
            )
        self.kind = model_kind(estimator)  # InputError for a type quantcli cannot serialise
        self.params = dict(params or {})
        self.seed = seed
        self.estimator = self._fresh(estimator, self.params)

    @staticmethod
    def _fresh(estimator: Any, params: dict[str, Any]) -> Any:
        # a deep copy keeps the caller's object untouched (it may be fitted already)
        est = copy.deepcopy(estimator)
        if params:
            if not hasattr(est, "set_params"):
                raise InputError(
                    f"`params` cannot be applied to a {type(est).__name__}",
                    hint="set the members' parameters before passing the ensemble",
                )
            try:
                est.set_params(**params)
            except ValueError as exc:
                raise InputError(f"`params` do not fit {type(est).__name__}: {exc}") from None
        return est

    def __call__(self, params: dict[str, Any] | None = None) -> Any:
        return self._fresh(self.estimator, dict(params or {}))

    def __repr__(self) -> str:
        return f"EstimatorFactory(kind={self.kind!r}, estimator={self.estimator!r})"


def _stage_alias(stage: str) -> str:
    """MLflow's stage names (``"Production"``, ``"Staging"``) as quantcli's registry aliases."""
    alias = STAGE_ALIASES.get(str(stage).strip().lower())
    if alias is None:
        raise InputError(
            f"`stage` must be 'Production' or 'Staging', got `stage={stage!r}`",
            hint="quantcli keeps MLflow's stages as the aliases 'production' and 'staging'",
        )
    return alias


def _check_user_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    """User run tags as strings; quantcli's and MLflow's own tag names are refused."""
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key.strip() or len(key) > 250:
            raise InputError(f"`tags` key {key!r} must be a non-empty string of <= 250 chars")
        if key.startswith(("quantcli.", "mlflow.")):
            raise InputError(
                f"`tags` key '{key}' is reserved: quantcli records its lineage under "
                "'quantcli.*' and MLflow under 'mlflow.*'"
            )
        text = str(value)
        if len(text) > 5000:
            raise InputError(f"`tags['{key}']` is longer than 5000 characters")
        out[key] = text
    return out


# -- the trainer --------------------------------------------------------------------------------
class MLflowTrainer:
    """Train a model with CPCV and log everything about it to MLflow, in one run.

    Parameters
    ----------
    experiment_name
        The MLflow experiment (created on first use; with the embedded store its artifacts go
        under ``$QCLI_HOME/mlartifacts``).
    tracking_uri
        ``--tracking-uri``; default ``MLFLOW_TRACKING_URI`` or ``sqlite:///$QCLI_HOME/mlflow.db``.
    cfg
        The configuration (``quantcli.config.load_config``): sections ``cpcv``, ``gates``,
        ``lightgbm``; defaults to ``DEFAULTS``.
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        tracking_uri: str | None = None,
        cfg: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.registry = ModelRegistry(tracking_uri)
        self.client = self.registry.client
        self.tracking_uri = self.registry.tracking_uri
        self.experiment_name = experiment_name
        self.cfg = cfg or config.load_config()
        #: the result of the last :meth:`promote_model_to_production` (reasons when refused)
        self.last_promotion: dict[str, Any] | None = None

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if is_local_store(self.tracking_uri):
            artifacts = config.mlflow_artifacts_dir()
            artifacts.mkdir(parents=True, exist_ok=True)
            location = artifacts.as_uri()
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:  # created concurrently by another process
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def train_with_cpcv(
        self,
        model: Any,
        X: Any,
        y: Any,
        *,
        model_name: str | None = None,
        cv_splits: int | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        feature_set: str = "technical_v1",
        feature_set_version: int | None = None,
        label: str = "fwd_return_5d",
        seed: int | None = None,
        register_as: str | None = None,
        executor: str = "local",
        progress: Any = None,
        run_name: str | None = None,
    ) -> TrainResult:
        """CPCV-backtest ``model`` on ``(X, y)``, refit it on all rows, log and register it.

        Parameters
        ----------
        model
            ``"lgbm"``, ``"mlp"``, ``"ensemble"``, a :class:`ModelFactory`, or an unfitted
            estimator quantcli can serialise (``lightgbm.LGBMRegressor``, a scikit-learn MLP
            pipeline, an :class:`~quantcli.models.estimators.EnsembleRegressor`), copied fresh
            for every split (:class:`EstimatorFactory`).
        X
            The training frame without its label: ``symbol``, ``ts`` (UTC), ``label_end`` and the
            feature columns (model input order = column order), as
            :func:`quantcli.features.dataset.load_training_frame` returns it; polars, pandas
            (``symbol``/``ts`` may be index levels) or pyarrow. An optional ``fwd_return_1d``
            column is the period return of the CPCV strategy (see
            :mod:`quantcli.backtest.engine`), not a feature.
        y
            The label per row (a forward return, as a fraction); no nulls.
        model_name
            Register the refit model as a new version of this name, alias ``staging`` (the
            seed's spelling of ``register_as``).
        cv_splits
            The number of CPCV groups ``N`` (default ``[cpcv] n_groups``); the number of test
            groups stays ``[cpcv] n_test_groups``, so there are ``C(N, k)`` splits.
        params
            Hyper-parameter overrides (default ``[lightgbm]`` of the config for ``lgbm``); for an
            estimator, applied with ``set_params``.
        tags
            Extra run tags (strings; names under ``quantcli.`` and ``mlflow.`` are reserved).
        seed
            Default ``[lightgbm] seed`` of the config.
        register_as
            Same as ``model_name``.

        Returns
        -------
        TrainResult
            ``passed``/``reasons`` are the CPCV backtest verdict, the same one ``qcli model
            train`` records; a failed verdict still logs and registers the run, and promotion
            refuses the version until every gate passes.
        """
        if model_name is not None and register_as is not None and model_name != register_as:
            raise InputError(
                f"`model_name={model_name!r}` and `register_as={register_as!r}` disagree; "
                "give one of them"
            )
        register_as = register_as or model_name
        if register_as is not None:
            from quantcli.models.registry import check_model_name

            check_model_name(register_as)
        user_tags = _check_user_tags(tags)
        cv_cfg = dict(self.cfg["cpcv"])
        if cv_splits is not None:
            if isinstance(cv_splits, bool) or not isinstance(cv_splits, int | np.integer):
                raise InputError(f"`cv_splits` must be an integer, got `cv_splits={cv_splits!r}`")
            if not int(cv_splits) > int(cv_cfg["n_test_groups"]):
                raise InputError(
                    f"`cv_splits={cv_splits}` groups must exceed the "
                    f"{cv_cfg['n_test_groups']} test groups of [cpcv] n_test_groups"
                )
            cv_cfg["n_groups"] = int(cv_splits)
        seed = int(self.cfg["lightgbm"].get("seed", 42) if seed is None else seed)
        factory = self._factory(model, params, seed)
        frame, feature_names = _training_frame(X, y)
        if feature_set_version is None:
            feature_set_version = _feature_set_version(feature_set)
        manifest = dataset_manifest(frame)
        exp_id = self._experiment_id()
        trained_at = datetime.now(UTC).isoformat()
        lineage = {
            T.MODEL_KIND: factory.kind,
            T.FEATURE_SET: feature_set,
            T.FEATURE_SET_VERSION: str(feature_set_version),
            T.LABEL: label,
            T.DATASET_SHA256: manifest["sha256"],
            T.DATASET_ROWS: str(manifest["rows"]),
            T.TRAINED_AT: trained_at,
            T.QUANTCLI_VERSION: __version__,
            T.SEED: str(seed),
            T.MODEL_ARTIFACT_PATH: MODEL_ARTIFACT_PATH,
        }
        run = self.client.create_run(
            exp_id,
            run_name=run_name or f"{register_as or factory.kind}-{manifest['sha256'][:8]}",
            tags={**user_tags, **lineage},
        )
        run_id = run.info.run_id
        model_dir: Path | None = None
        self._trial_name = register_as or f"{self.experiment_name}/{factory.kind}"
        try:
            result, model_dir = self._run(
                run_id,
                factory,
                frame,
                feature_names,
                manifest,
                lineage,
                seed,
                executor,
                progress,
                cv_cfg,
            )
            result.experiment_id = exp_id
            if register_as:
                info = self.registry.register_version(
                    register_as,
                    run_id,
                    model_dir,
                    {**lineage, T.FEATURE_NAMES: json.dumps(feature_names)},
                )
                result.registered_name = register_as
                result.version = info.version
                result.aliases = info.aliases
            self.client.set_terminated(run_id, "FINISHED")
            return result
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        finally:
            if model_dir is not None:
                shutil.rmtree(model_dir.parent, ignore_errors=True)

    def load_production_model(self, model_name: str, stage: str = "Production") -> Any:
        """The native model behind ``stage`` of ``model_name``, verified and loaded without pickle.

        ``stage`` keeps MLflow's names: ``"Production"`` is the ``production`` alias (what
        ``qcli model promote`` moves), ``"Staging"`` the ``staging`` alias (what training sets).
        The artifacts' sha256 and signature are checked before loading, as ``qcli serve`` does.

        Returns
        -------
        NativeModel
            ``predict(X)`` on a float matrix of the model's ``feature_names``; ``version`` and
            ``alias`` say what was loaded.

        Raises
        ------
        NotFoundError
            No such model, or no version holds the alias.
        IntegrityError
            An artifact does not verify.
        """
        alias = _stage_alias(stage)
        model, info = self.registry.load_native_model(model_name, alias=alias)
        model.version, model.alias = str(info.version), alias
        return model

    def promote_model_to_production(
        self, model_name: str, version: str | int | None = None, *, reason: str | None = None
    ) -> bool:
        """Move ``production`` to ``version`` (default: the ``staging`` version), gated.

        The same promotion as ``qcli model promote NAME [--version V]``: every verdict of
        ``[registry] required_verdicts`` (backtest, parity, scan at least) must be ``pass`` and
        the artifacts must verify; the move is recorded in version tags and the registry events.
        There is no override here: a forced promotion is ``qcli model promote --force --reason``.

        Returns
        -------
        bool
            True when every gate passed and the version is production (also when it already
            was); False when a gate refused it -- even for a version an override made
            production -- with each reason logged as a warning on the
            ``quantcli.models.trainer`` logger and kept in :attr:`last_promotion`.
        """
        from quantcli.models.registry import required_verdicts

        try:
            result = self.registry.promote(
                model_name, version, reason=reason, required=required_verdicts(self.cfg)
            )
        except GateFailedError as exc:
            self.last_promotion = exc.result or {"promoted": False, "reasons": exc.reasons}
            _log.warning("promotion of %s refused: %s", model_name, exc.message)
            for why in exc.reasons:
                _log.warning("  %s", why)
            return False
        self.last_promotion = result
        return True

    def _factory(self, model: Any, params, seed: int) -> Any:
        if isinstance(model, ModelFactory | EstimatorFactory):
            return model
        if not isinstance(model, str):
            return EstimatorFactory(model, params, seed)
        return config_factory(self.cfg, model, seed, params)

    def _run(
        self, run_id, factory, frame, feature_names, manifest, lineage, seed, executor, bar, cv_cfg
    ):
        from mlflow.entities import Metric, Param, RunTag

        gates = dict(self.cfg["gates"])
        feature_set, label = lineage[T.FEATURE_SET], lineage[T.LABEL]
        grid_name = self.cfg.get("train", {}).get("grid", "small")
        bt, bt_result = _run_backtest(
            frame,
            feature_names,
            factory,
            cv_cfg,
            gates,
            seed,
            executor,
            bar,
            param_grid=training_grid(factory, grid_name),
            **backtest_options(self.cfg, feature_set),
        )
        # DSR counts every configuration ever backtested under this model name, across runs
        context = trial_context(self.cfg, feature_set, label, _model_params(factory), seed)
        record_and_deflate(TrialLog(client=self.client), self._trial_name, bt_result, context)
        bt = _normalise_backtest(bt_result)
        # the gates judged the selected configuration's paths: refit and register that one
        selected = bt_result.configs[bt_result.selected_config]
        factory = with_selected_params(factory, selected)
        # the cv_ metrics describe the registered configuration, not the grid's other trials
        per_fold, cv_means = _fold_metrics(
            [f for f in bt["folds"] if f.get("config", 0) == bt_result.selected_config]
        )
        bt_metrics = _scalar_metrics(bt["metrics"])

        now = int(datetime.now(UTC).timestamp() * 1000)
        params = {**_model_params(factory), "seed": seed, "n_features": len(feature_names)}
        params["train_grid"] = grid_name
        params["backtest_selected_params"] = json.dumps(selected, sort_keys=True)
        params.update({f"cpcv_{k}": v for k, v in cv_cfg.items()})
        params.update({f"gate_{k}": v for k, v in gates.items()})
        metrics = [Metric(k, v, now, 0) for k, v in cv_means.items()]
        metrics += [Metric(f"backtest_{k}", v, now, 0) for k, v in sorted(bt_metrics.items())]
        for key, values in per_fold.items():
            metrics += [Metric(f"cv_{key}", v, now, i) for i, v in enumerate(values)]
        run_tags = {
            T.FEATURE_NAMES: json.dumps(feature_names),
            "quantcli.backtest.verdict": T.PASS if bt["passed"] else T.FAIL,
            "quantcli.backtest.reasons": json.dumps(bt["reasons"]),
            "quantcli.backtest.pbo": pbo_statement(bt["metrics"]),
            "quantcli.dataset.manifest": json.dumps(
                {k: v for k, v in manifest.items() if k != "columns"}, sort_keys=True
            ),
        }
        # MLflow caps a batch at 100 params / 1000 metrics
        param_list = [Param(k, str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(param_list), 100):
            self.client.log_batch(run_id, params=param_list[i : i + 100])
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in run_tags.items()])
        self._log_dataset(run_id, manifest, lineage)

        work = Path(tempfile.mkdtemp(prefix="qcli-train-"))
        (work / "backtest").mkdir()
        (work / "backtest" / "result.json").write_text(
            json.dumps(bt["raw"], indent=2, sort_keys=True, default=str)
        )
        # the CPCV report (equity and drawdown of every path, Sharpe distribution, metrics and
        # path returns) goes with the run, so a reviewer sees the plots next to the model
        report_files = write_report(bt_result, work / "backtest")
        self.client.log_artifacts(run_id, str(work / "backtest"), BACKTEST_ARTIFACT_PATH)

        X_all = frame.select(feature_names).to_numpy().astype(np.float64)
        y_all = frame.get_column("label").to_numpy().astype(np.float64)
        fitted = factory().fit(X_all, y_all)
        model_dir = work / MODEL_ARTIFACT_PATH
        files = save_model(fitted, model_dir, feature_names)
        (model_dir / "signature.json").write_text(_signature_json(feature_names))
        # MLflow's own flavors beside the native files, so pyfunc and `mlflow models serve` load it
        from quantcli.models.flavors import add_standard_flavors

        flavor_files = add_standard_flavors(fitted, model_dir, feature_names, X_all)
        files = sorted([*files, "signature.json", *flavor_files])
        self.client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
        return TrainResult(
            run_id=run_id,
            experiment_id="",
            tracking_uri=self.tracking_uri,
            model_kind=factory.kind,
            feature_names=feature_names,
            dataset=manifest,
            cv_metrics=cv_means,
            backtest_metrics=bt_metrics,
            passed=bt["passed"],
            reasons=bt["reasons"],
            model_files=files,
            backtest_report=sorted(
                f"{BACKTEST_ARTIFACT_PATH}/{Path(p).name}"
                for p in [work / "backtest" / "result.json", *report_files.values()]
            ),
        ), model_dir

    def _log_dataset(self, run_id: str, manifest: dict[str, Any], lineage: dict[str, str]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        schema = {"mlflow_colspec": [{"name": c, "type": "double"} for c in manifest["columns"]]}
        profile = {k: manifest[k] for k in ("rows", "symbols", "start", "end")}
        dataset = Dataset(
            name=f"{lineage[T.FEATURE_SET]}:{lineage[T.LABEL]}",
            digest=manifest["sha256"][:16],
            source_type="quantcli-offline-store",
            source=json.dumps(
                {"feature_set": lineage[T.FEATURE_SET], "sha256": manifest["sha256"]}
            ),
            schema=json.dumps(schema),
            profile=json.dumps(profile),
        )
        self.client.log_inputs(
            run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
        )


def _model_params(factory: Any) -> dict[str, Any]:
    if isinstance(factory, EstimatorFactory):
        # the estimator's own parameters, as the user set them
        prefix = {"lgbm": "lgbm_", "mlp": "mlp_"}.get(factory.kind, "")
        est = factory.estimator
        raw = est.get_params(deep=False) if factory.kind == "lgbm" else {}
        return {
            "model_kind": factory.kind,
            "estimator": type(est).__name__,
            **{f"{prefix}{k}": v for k, v in sorted(raw.items()) if v is not None},
        }
    if factory.kind == "lgbm":
        p = lgbm_params(factory.params, factory.seed)
        return {"model_kind": "lgbm", **{f"lgbm_{k}": v for k, v in sorted(p.items())}}
    if factory.kind == "mlp":
        p = mlp_params(factory.params)
        return {"model_kind": "mlp", **{f"mlp_{k}": v for k, v in sorted(p.items())}}
    lg = lgbm_params(factory.params.get("lgbm"), factory.seed)
    mp = mlp_params(factory.params.get("mlp"))
    return {
        "model_kind": "ensemble",
        **{f"lgbm_{k}": v for k, v in sorted(lg.items())},
        **{f"mlp_{k}": v for k, v in sorted(mp.items())},
    }


def _signature_json(feature_names: list[str]) -> str:
    """The MLflow model signature: float64 feature columns in order -> one float64 prediction."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    sig = ModelSignature(
        inputs=Schema([ColSpec("double", n) for n in feature_names]),
        outputs=Schema([ColSpec("double", "prediction")]),
    )
    return json.dumps(sig.to_dict(), indent=2, sort_keys=True) + "\n"


def _training_frame(X: Any, y: Any) -> tuple[pl.DataFrame, list[str]]:
    if is_pandas(y) or is_pyarrow(y):
        y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    X = to_polars(X, "X")
    missing = [c for c in INDEX_COLUMNS if c not in X.columns]
    if missing:
        raise InputError(
            f"`X` lacks the index column(s) {missing}",
            hint="X needs symbol, ts, label_end and the features "
            "(quantcli.features.dataset.load_training_frame)",
        )
    extra = [RETURN_COLUMN] if RETURN_COLUMN in X.columns else []
    feature_names = [c for c in X.columns if c not in (*INDEX_COLUMNS, "label", *extra)]
    if not feature_names:
        raise InputError("`X` has no feature columns")
    y_arr = np.asarray(y.to_numpy() if isinstance(y, pl.Series) else y, dtype=np.float64)
    if y_arr.shape != (X.height,):
        raise InputError(f"`y` must have {X.height} values (one per row of X), got {y_arr.shape}")
    if not np.isfinite(y_arr).all():
        bad = int((~np.isfinite(y_arr)).sum())
        raise InputError(f"`y` has {bad} null/NaN/inf label(s); drop those rows first")
    if X.height < 100:
        raise InputError(f"`X` has {X.height} rows; CPCV training needs at least 100")
    frame = X.with_columns(pl.Series("label", y_arr))
    frame = frame.select("symbol", "ts", *feature_names, "label", "label_end", *extra)
    return frame.sort("ts", "symbol", maintain_order=True), feature_names


def _feature_set_version(feature_set: str) -> int:
    from quantcli.features.definitions import load_feature_set

    return load_feature_set(feature_set).version


def train_from_store(
    name: str,
    *,
    model: str = "lgbm",
    feature_set: str = "technical_v1",
    label: str = "fwd_return_5d",
    tracking_uri: str | None = None,
    cfg: dict[str, dict[str, Any]] | None = None,
    seed: int | None = None,
    experiment_name: str = DEFAULT_EXPERIMENT,
    executor: str = "local",
    progress: Any = None,
    store_path: str | None = None,
) -> TrainResult:
    """``qcli model train``: load the stored features and labels, train, register as ``name``.

    Reads the stored features and labels (``load_training_frame`` plus the strategy's
    ``fwd_return_1d``, as ``qcli backtest cpcv`` does), then runs
    :meth:`MLflowTrainer.train_with_cpcv` with ``register_as=name`` (alias ``staging``).
    """
    from quantcli.models.registry import check_model_name
    from quantcli.store.offline import OfflineStore

    check_model_name(name)
    check_model_kind(model)  # bad options fail before any data is read
    with OfflineStore(store_path, read_only=True) as store:
        # the same frame `qcli backtest cpcv` uses: features, label, label_end, fwd_return_1d
        frame, _ = load_backtest_frame(feature_set, label, store)
    trainer = MLflowTrainer(experiment_name, tracking_uri, cfg)
    return trainer.train_with_cpcv(
        model,
        frame.drop("label"),
        frame.get_column("label"),
        feature_set=feature_set,
        label=label,
        seed=seed,
        register_as=name,
        executor=executor,
        progress=progress,
    )
