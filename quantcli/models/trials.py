"""The trial log: every configuration backtested under a model name, kept in MLflow.

Each trial is one MLflow run in the experiment :data:`EXPERIMENT`, tagged with the model name
and its trial id (:func:`quantcli.backtest.trials.trial_id`); its metric ``sharpe_per_period``
keeps every outcome, the latest counting. :func:`quantcli.backtest.trials.record_and_deflate`
reads and writes through this log.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from quantcli.backtest.trials import Trial, check_trial_name
from quantcli.models.registry import ModelRegistry

if TYPE_CHECKING:
    from quantcli.workspace import Workspace

EXPERIMENT = "quantcli-trials"
TAG_MODEL = "quantcli.trial.model"
TAG_MODEL_KEY = "quantcli.trial.model_sha256"
TAG_ID = "quantcli.trial.id"
TAG_CONFIG = "quantcli.trial.config"
METRIC = "sharpe_per_period"


def _model_key(model_name: str) -> str:
    # searched by a hash of the name, so no name can inject into MLflow's filter syntax
    return hashlib.sha256(model_name.encode()).hexdigest()


class TrialLog:
    """The trials of every model name in an MLflow tracking store.

    Parameters
    ----------
    workspace
        Whose tracking store; default :meth:`Workspace.from_env`.
    client
        An ``MlflowClient`` to use instead (``workspace`` is then ignored).
    tracking_uri
        Deprecated alias of ``workspace``: a tracking URI.
    """

    def __init__(
        self,
        workspace: Workspace | str | None = None,
        client: Any = None,
        *,
        tracking_uri: str | None = None,
    ) -> None:
        if client is None:
            client = ModelRegistry(workspace, tracking_uri=tracking_uri).client
        self.client = client

    def _experiment_id(self, create: bool) -> str | None:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(EXPERIMENT)
        except MlflowException:  # created concurrently by another process
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                raise
            return exp.experiment_id

    def _runs(self, model_name: str) -> list[Any]:
        exp_id = self._experiment_id(create=False)
        if exp_id is None:
            return []
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [exp_id],
                filter_string=f"tags.`{TAG_MODEL_KEY}` = '{_model_key(model_name)}'",
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def sharpes(self, model_name: str) -> dict[str, float]:
        """``{trial id: per-period Sharpe ratio}`` of every recorded trial of ``model_name``."""
        out: dict[str, float] = {}
        for run in self._runs(model_name):
            tid = run.data.tags.get(TAG_ID)
            value = run.data.metrics.get(METRIC)
            if tid and value is not None and math.isfinite(value):
                out[tid] = float(value)
        return out

    def record(self, model_name: str, trials: Sequence[Trial]) -> None:
        """Record ``trials`` under ``model_name``; a known trial id gets its new Sharpe ratio."""
        from mlflow.entities import Metric

        check_trial_name(model_name)
        existing = {r.data.tags.get(TAG_ID): r.info.run_id for r in self._runs(model_name)}
        exp_id = self._experiment_id(create=True)
        for trial in trials:
            if not math.isfinite(trial.sharpe_per_period):
                continue
            run_id = existing.get(trial.trial_id)
            step = 0
            if run_id is None:
                tags = {
                    TAG_MODEL: model_name,
                    TAG_MODEL_KEY: _model_key(model_name),
                    TAG_ID: trial.trial_id,
                    TAG_CONFIG: json.dumps(trial.config, sort_keys=True, default=str)[:5000],
                }
                run = self.client.create_run(exp_id, run_name=f"trial-{trial.trial_id}", tags=tags)
                run_id = run.info.run_id
            else:  # the trial's history keeps every outcome; the latest counts
                step = len(self.client.get_metric_history(run_id, METRIC))
            now = int(time.time() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[
                    Metric(METRIC, trial.sharpe_per_period, now, step),
                    Metric("n_periods", float(trial.n_periods), now, step),
                ],
            )
            if step == 0:
                self.client.set_terminated(run_id, "FINISHED")


__all__ = ["EXPERIMENT", "METRIC", "TrialLog"]
