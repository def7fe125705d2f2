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
The data is :mod:`quantcli.models.dataset`, the model
:func:`quantcli.models.backtest.config_factory` (the one ``qcli backtest cpcv`` fits), what
the run logs :mod:`quantcli.models.run_log`.

Same data, config and seed -> the same dataset hash, the same CV metrics and the same model bytes.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.backtest import engine
from quantcli.backtest.engine import BacktestResult
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
from quantcli.features.definitions import load_feature_set
from quantcli.models import tags as T
from quantcli.models.backtest import config_factory, training_grid, with_selected_params
from quantcli.models.dataset import (
    INDEX_COLUMNS,
    RETURN_COLUMN,
    dataset_manifest,
    frame_sha256,
    training_frame,
)
from quantcli.models.estimators import EstimatorFactory, ModelFactory, check_model_kind
from quantcli.models.flavors import add_standard_flavors
from quantcli.models.mlflow_env import is_local_store
from quantcli.models.registry import ModelRegistry
from quantcli.models.run_log import (
    TrainResult,
    fold_metrics,
    lineage_tags,
    log_batches,
    log_dataset,
    run_params,
    scalar_metrics,
    signature_json,
    user_tags,
)
from quantcli.models.serialize import save_model
from quantcli.models.trials import TrialLog
from quantcli.models.verdicts import backtest_record, required_verdicts
from quantcli.models.versions import MODEL_ARTIFACT_PATH, check_model_name
from quantcli.store.offline import OfflineStore
from quantcli.workspace import Workspace

DEFAULT_EXPERIMENT = "quantcli"
#: Artifact folder of a training run holding the CPCV report (metrics, plots, path returns).
BACKTEST_ARTIFACT_PATH = "backtest"
#: The registry-stage names of MLflow's deprecated stages, mapped to quantcli's aliases.
STAGE_ALIASES = {"production": T.ALIAS_PRODUCTION, "staging": T.ALIAS_STAGING}
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Backtested:
    """The training backtest: its result, the grid tried and the configuration to register."""

    result: BacktestResult
    grid_name: str
    selected: dict[str, Any]
    factory: Any


def _stage_alias(stage: str) -> str:
    """MLflow's stage names (``"Production"``, ``"Staging"``) as quantcli's registry aliases."""
    alias = STAGE_ALIASES.get(str(stage).strip().lower())
    if alias is None:
        raise InputError(
            f"`stage` must be 'Production' or 'Staging', got `stage={stage!r}`",
            hint="quantcli keeps MLflow's stages as the aliases 'production' and 'staging'",
        )
    return alias


# -- the trainer --------------------------------------------------------------------------------
class MLflowTrainer:
    """Train a model with CPCV and log everything about it to MLflow, in one run.

    Parameters
    ----------
    experiment_name
        The MLflow experiment (created on first use; with the embedded store its artifacts go
        under ``$QCLI_HOME/mlartifacts``).
    tracking_uri
        Deprecated alias: ``--tracking-uri`` (default ``MLFLOW_TRACKING_URI`` or
        ``sqlite:///$QCLI_HOME/mlflow.db``); prefer ``workspace``.
    cfg
        The configuration (``quantcli.config.load_config``): sections ``cpcv``, ``gates``,
        ``lightgbm``; defaults to the workspace's (the embedded defaults unless it names a file).
    workspace
        Where the tracking store, the artifacts and the config live; default
        :meth:`Workspace.from_env`.
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        tracking_uri: str | None = None,
        cfg: dict[str, dict[str, Any]] | None = None,
        *,
        workspace: Workspace | None = None,
    ) -> None:
        self.registry = ModelRegistry(workspace, tracking_uri=tracking_uri)
        self.workspace = self.registry.workspace
        self.client = self.registry.client
        self.tracking_uri = self.registry.tracking_uri
        self.experiment_name = experiment_name
        self.cfg = cfg or copy.deepcopy(self.workspace.config)
        #: the result of the last :meth:`promote_model_to_production` (reasons when refused)
        self.last_promotion: Any = None

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if is_local_store(self.tracking_uri):
            artifacts = self.workspace.artifacts_dir
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
            Register the refit model as a new version of this name, alias ``staging`` (another
            spelling of ``register_as``).
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
        register_as = _registration_name(model_name, register_as)
        extra_tags = user_tags(tags)
        cv_cfg = _cv_config(self.cfg["cpcv"], cv_splits)
        seed = int(self.cfg["lightgbm"].get("seed", 42) if seed is None else seed)
        factory = self._factory(model, params, seed)
        frame, feature_names = training_frame(X, y)
        if feature_set_version is None:
            feature_set_version = load_feature_set(feature_set).version
        manifest = dataset_manifest(frame)
        exp_id = self._experiment_id()
        lineage = lineage_tags(
            factory.kind, feature_set, feature_set_version, label, manifest, seed
        )
        run = self.client.create_run(
            exp_id,
            run_name=run_name or f"{register_as or factory.kind}-{manifest['sha256'][:8]}",
            tags={**extra_tags, **lineage},
        )
        trial = register_as or f"{self.experiment_name}/{factory.kind}"  # the DSR's trial count
        data = (frame, feature_names, manifest, lineage, trial)
        with _run_status(self.client, run.info.run_id) as run_id, _workdir() as work:
            result = self._run(run_id, factory, *data, seed, executor, progress, cv_cfg, work)
            result = replace(result, experiment_id=exp_id)
            if register_as:
                info = self.registry.register_version(
                    register_as,
                    run_id,
                    work / MODEL_ARTIFACT_PATH,
                    {**lineage, T.FEATURE_NAMES: json.dumps(feature_names)},
                    backtest=backtest_record(
                        T.PASS if result.passed else T.FAIL,
                        list(result.reasons),
                        result.thresholds,
                        result.backtest_metrics,
                    ),
                )
                result = replace(
                    result, registered_name=register_as, version=info.version, aliases=info.aliases
                )
        return result

    def _factory(self, model: Any, params, seed: int) -> Any:
        if isinstance(model, ModelFactory | EstimatorFactory):
            return model
        if not isinstance(model, str):
            return EstimatorFactory(model, params, seed)
        return config_factory(self.cfg, model, seed, params)

    def _run(
        self, run_id, factory, frame, feature_names, manifest, lineage, trial, seed, executor,
        bar, cv_cfg, work,
    ) -> TrainResult:  # fmt: skip
        """Backtest, log the run, write the report, refit the selected configuration and log
        its files under ``work``; the result (registration is the caller's)."""
        bt = self._backtest(
            factory, frame, feature_names, lineage, seed, executor, bar, cv_cfg, trial
        )
        result = bt.result
        # the cv_ metrics describe the registered configuration, not the grid's other trials
        per_fold, cv_means = fold_metrics(
            [f for f in result.fold_metrics if f.get("config", 0) == result.selected_config]
        )
        bt_metrics = scalar_metrics(result.metrics)
        self._log(
            run_id, bt, feature_names, manifest, cv_cfg, seed, (per_fold, cv_means, bt_metrics)
        )
        log_dataset(self.client, run_id, manifest, lineage)
        report = self._log_report(run_id, result, work / BACKTEST_ARTIFACT_PATH)
        files = self._refit_and_log(run_id, bt.factory, frame, feature_names, work)
        return TrainResult(
            passed=result.passed,
            reasons=list(result.reasons),
            run_id=run_id,
            experiment_id="",
            tracking_uri=self.tracking_uri,
            model_kind=bt.factory.kind,
            feature_names=feature_names,
            dataset=manifest,
            cv_metrics=cv_means,
            backtest_metrics=bt_metrics,
            model_files=files,
            thresholds=dict(result.thresholds),
            backtest_report=report,
        )

    def _backtest(self, factory, frame, feature_names, lineage, seed, executor, bar, cv_cfg, trial):
        """The CPCV backtest over ``[train] grid``, its DSR deflated by every configuration
        backtested under this model name (across runs), and the selected configuration."""
        feature_set, label = lineage[T.FEATURE_SET], lineage[T.LABEL]
        grid_name = self.cfg.get("train", {}).get("grid", "small")
        result = engine.run_cpcv_backtest(
            frame,
            feature_names,
            model_factory=factory,
            cv=cv_from_config(cv_cfg),
            param_grid=training_grid(factory, grid_name),
            gates=dict(self.cfg["gates"]),
            executor=executor,
            seed=seed,
            progress=bar,
            **backtest_options(self.cfg, feature_set),
        )
        context = trial_context(self.cfg, feature_set, label, run_params(factory), seed)
        record_and_deflate(TrialLog(client=self.client), trial, result, context)
        # the gates judged the selected configuration's paths: refit and register that one
        selected = result.configs[result.selected_config]
        return _Backtested(result, grid_name, selected, with_selected_params(factory, selected))

    def _log(self, run_id, bt, feature_names, manifest, cv_cfg, seed, folds) -> None:
        """The run's parameters, metrics and tags (see :mod:`quantcli.models.run_log`)."""
        from mlflow.entities import Metric

        per_fold, cv_means, bt_metrics = folds
        gates = dict(self.cfg["gates"])
        now = int(datetime.now(UTC).timestamp() * 1000)
        params = {**run_params(bt.factory), "seed": seed, "n_features": len(feature_names)}
        params["train_grid"] = bt.grid_name
        params["backtest_selected_params"] = json.dumps(bt.selected, sort_keys=True)
        params.update({f"cpcv_{k}": v for k, v in cv_cfg.items()})
        params.update({f"gate_{k}": v for k, v in gates.items()})
        metrics = [Metric(k, v, now, 0) for k, v in cv_means.items()]
        metrics += [Metric(f"backtest_{k}", v, now, 0) for k, v in sorted(bt_metrics.items())]
        for key, values in per_fold.items():
            metrics += [Metric(f"cv_{key}", v, now, i) for i, v in enumerate(values)]
        result = bt.result
        tags = {
            T.FEATURE_NAMES: json.dumps(feature_names),
            "quantcli.backtest.verdict": T.PASS if result.passed else T.FAIL,
            "quantcli.backtest.reasons": json.dumps(list(result.reasons)),
            "quantcli.backtest.pbo": pbo_statement(result.metrics),
            "quantcli.dataset.manifest": json.dumps(
                {k: v for k, v in manifest.items() if k != "columns"}, sort_keys=True
            ),
        }
        log_batches(self.client, run_id, params, metrics, tags)

    def _log_report(self, run_id: str, result: BacktestResult, out: Path) -> list[str]:
        """``result.json`` and the CPCV report (equity and drawdown of every path, Sharpe
        distribution, metrics and path returns) as the run's ``backtest/`` artifacts, so a
        reviewer sees the plots next to the model; their artifact paths."""
        out.mkdir(parents=True)
        (out / "result.json").write_text(
            json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str)
        )
        report_files = write_report(result, out)
        self.client.log_artifacts(run_id, str(out), BACKTEST_ARTIFACT_PATH)
        return sorted(
            f"{BACKTEST_ARTIFACT_PATH}/{Path(p).name}"
            for p in [out / "result.json", *report_files.values()]
        )

    def _refit_and_log(self, run_id, factory, frame, feature_names, work: Path) -> list[str]:
        """Refit on every row, save the native files, the signature and MLflow's own flavors
        (so pyfunc and ``mlflow models serve`` load it) under ``work/model``; log them."""
        X_all = frame.select(feature_names).to_numpy().astype(np.float64)
        y_all = frame.get_column("label").to_numpy().astype(np.float64)
        fitted = factory().fit(X_all, y_all)
        model_dir = work / MODEL_ARTIFACT_PATH
        files = save_model(fitted, model_dir, feature_names)
        (model_dir / "signature.json").write_text(signature_json(feature_names))
        flavor_files = add_standard_flavors(fitted, model_dir, feature_names, X_all)
        self.client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
        return sorted([*files, "signature.json", *flavor_files])

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


@contextmanager
def _run_status(client: Any, run_id: str) -> Iterator[str]:
    """The run ends ``FINISHED`` when the block completes, ``FAILED`` when anything escapes."""
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


@contextmanager
def _workdir() -> Iterator[Path]:
    """A scratch folder for the run's artifacts, removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="qcli-train-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _registration_name(model_name: str | None, register_as: str | None) -> str | None:
    """The one name to register under (``model_name`` and ``register_as`` are synonyms)."""
    if model_name is not None and register_as is not None and model_name != register_as:
        raise InputError(
            f"`model_name={model_name!r}` and `register_as={register_as!r}` disagree; "
            "give one of them"
        )
    name = register_as or model_name
    if name is not None:
        check_model_name(name)
    return name


def _cv_config(section: dict[str, Any], cv_splits: int | None) -> dict[str, Any]:
    """The ``[cpcv]`` section with ``n_groups = cv_splits`` when given (checked)."""
    cv_cfg = dict(section)
    if cv_splits is None:
        return cv_cfg
    if isinstance(cv_splits, bool) or not isinstance(cv_splits, int | np.integer):
        raise InputError(f"`cv_splits` must be an integer, got `cv_splits={cv_splits!r}`")
    if not int(cv_splits) > int(cv_cfg["n_test_groups"]):
        raise InputError(
            f"`cv_splits={cv_splits}` groups must exceed the "
            f"{cv_cfg['n_test_groups']} test groups of [cpcv] n_test_groups"
        )
    cv_cfg["n_groups"] = int(cv_splits)
    return cv_cfg


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
    workspace: Workspace | None = None,
) -> TrainResult:
    """``qcli model train``: load the stored features and labels, train, register as ``name``.

    Reads the stored features and labels (``load_training_frame`` plus the strategy's
    ``fwd_return_1d``, as ``qcli backtest cpcv`` does), then runs
    :meth:`MLflowTrainer.train_with_cpcv` with ``register_as=name`` (alias ``staging``).
    ``workspace`` holds the store and the registry (default :meth:`Workspace.from_env`);
    ``tracking_uri`` and ``store_path`` are deprecated aliases overriding its parts.
    """
    check_model_name(name)
    check_model_kind(model)  # bad options fail before any data is read
    trainer = MLflowTrainer(experiment_name, tracking_uri, cfg, workspace=workspace)
    with OfflineStore(store_path or trainer.workspace.offline_path, read_only=True) as store:
        # the same frame `qcli backtest cpcv` uses: features, label, label_end, fwd_return_1d
        frame, _ = load_backtest_frame(feature_set, label, store)
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


__all__ = [
    "BACKTEST_ARTIFACT_PATH",
    "DEFAULT_EXPERIMENT",
    "INDEX_COLUMNS",
    "RETURN_COLUMN",
    "EstimatorFactory",
    "MLflowTrainer",
    "TrainResult",
    "dataset_manifest",
    "frame_sha256",
    "train_from_store",
]
