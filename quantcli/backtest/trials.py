"""Every configuration tried under a model name, kept in MLflow, so DSR deflates by all of them.

A researcher who backtests fifty configurations and keeps the best must see a deflated Sharpe
ratio that knows about the other forty-nine, across runs and processes. Each trial is one MLflow
run in the experiment :data:`EXPERIMENT`, tagged with the model name and a **trial id**: the
sha256 of the configuration (model parameters, feature set, label, costs, construction, CV).
Running the same configuration again updates its trial (it is not a new one); a changed
parameter is a new trial.

The DSR of a backtest then uses ``N`` = this run's configurations plus every other recorded
trial of the name, and ``V`` = the variance (ddof = 0) of their per-period Sharpe ratios
(:func:`quantcli.backtest.stats.deflated_sharpe_ratio`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from quantcli.backtest import stats
from quantcli.errors import InputError

EXPERIMENT = "quantcli-trials"
TAG_MODEL = "quantcli.trial.model"
TAG_MODEL_KEY = "quantcli.trial.model_sha256"
TAG_ID = "quantcli.trial.id"
TAG_CONFIG = "quantcli.trial.config"
METRIC = "sharpe_per_period"


@dataclass(frozen=True)
class Trial:
    """One configuration's outcome: its id, configuration and per-period Sharpe ratio."""

    trial_id: str
    config: dict[str, Any]
    sharpe_per_period: float
    n_periods: int


def trial_id(config: dict[str, Any]) -> str:
    """The first 16 hex digits of the sha256 of the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_NAME = re.compile(r"[A-Za-z0-9_.\-/ ]{1,200}")


def check_trial_name(model_name: str) -> str:
    """``model_name`` if it can name a trial log (letters, digits, ``_ . - /`` and spaces, at
    most 200 characters), else :class:`~quantcli.errors.InputError` (exit 2)."""
    if not isinstance(model_name, str) or not _NAME.fullmatch(model_name):
        raise InputError(
            f"invalid model name {str(model_name)[:60]!r} for the trial log",
            hint="use letters, digits, spaces, '_', '.', '-', '/' (at most 200 characters)",
        )
    return model_name


def _model_key(model_name: str) -> str:
    # searched by a hash of the name, so no name can inject into MLflow's filter syntax
    return hashlib.sha256(model_name.encode()).hexdigest()


class TrialLog:
    """The trials of every model name in an MLflow tracking store.

    Parameters
    ----------
    tracking_uri
        Default ``MLFLOW_TRACKING_URI`` or the embedded ``sqlite:///$QCLI_HOME/mlflow.db``.
    client
        An ``MlflowClient`` to use instead (``tracking_uri`` is then ignored).
    """

    def __init__(self, tracking_uri: str | None = None, client: Any = None) -> None:
        if client is None:
            from quantcli.models.registry import ModelRegistry

            client = ModelRegistry(tracking_uri).client
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
            now = _now_ms()
            self.client.log_batch(
                run_id,
                metrics=[
                    Metric(METRIC, trial.sharpe_per_period, now, step),
                    Metric("n_periods", float(trial.n_periods), now, step),
                ],
            )
            if step == 0:
                self.client.set_terminated(run_id, "FINISHED")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def grid_trials(result: Any, context: dict[str, Any]) -> list[Trial]:
    """The trials of a :class:`~quantcli.backtest.engine.BacktestResult`: one per configuration
    of its grid, identified by ``context`` (what else defines the configuration) + params."""
    n_periods = int(result.path_returns.shape[1])
    return [
        Trial(
            trial_id({**context, "params": g["params"]}),
            {**context, "params": g["params"]},
            float(g["sharpe_per_period_median"]),
            n_periods,
        )
        for g in result.grid
    ]


def deflate(result: Any, prior_sharpes: Sequence[float]) -> None:
    """Recompute ``result``'s DSR with the grid's trials plus ``prior_sharpes`` (in place)."""
    m = result.metrics
    grid = [float(g["sharpe_per_period_median"]) for g in result.grid]
    prior = [float(s) for s in prior_sharpes if math.isfinite(s)]
    srs = [s for s in grid if math.isfinite(s)] + prior
    m["dsr"] = stats.deflated_sharpe_ratio(
        m["sharpe_per_period"], srs, int(m["n_periods"]), m["skew"], m["kurtosis"]
    )
    m["expected_max_sharpe_per_period"] = stats.expected_max_sharpe(srs)
    m["n_trials"] = len(srs)
    m["n_prior_trials"] = len(prior)


def record_and_deflate(
    log: TrialLog, model_name: str, result: Any, context: dict[str, Any]
) -> list[Trial]:
    """Deflate ``result``'s DSR by every other trial recorded under ``model_name``, then record
    this run's configurations as trials of it. Returns the recorded trials."""
    trials = grid_trials(result, context)
    mine = {t.trial_id for t in trials}
    prior = [s for tid, s in log.sharpes(model_name).items() if tid not in mine]
    deflate(result, prior)
    result.metrics["trial_model"] = model_name
    log.record(model_name, trials)
    return trials
