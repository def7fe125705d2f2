"""The trial arithmetic: every configuration tried under a model name deflates DSR.

A researcher who backtests fifty configurations and keeps the best must see a deflated Sharpe
ratio that knows about the other forty-nine, across runs and processes. Each trial has a
**trial id**: the sha256 of the configuration (model parameters, feature set, label, costs,
construction, CV). Running the same configuration again updates its trial (it is not a new
one); a changed parameter is a new trial. Where the trials are kept is the caller's log
(:class:`quantcli.models.trials.TrialLog` keeps them in MLflow).

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
from typing import Any, Protocol

from quantcli.backtest import stats
from quantcli.errors import InputError


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


class TrialStore(Protocol):
    """Where trials are kept: the recorded Sharpe ratios of a name, and recording new ones."""

    def sharpes(self, model_name: str) -> dict[str, float]: ...

    def record(self, model_name: str, trials: Sequence[Trial]) -> None: ...


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


def deflate_by_log(
    log: TrialStore, model_name: str, result: Any, context: dict[str, Any]
) -> list[Trial]:
    """Deflate ``result``'s DSR by every other trial recorded under ``model_name``; this run's
    trials, for the caller to record once its outputs are written."""
    trials = grid_trials(result, context)
    mine = {t.trial_id for t in trials}
    prior = [s for tid, s in log.sharpes(model_name).items() if tid not in mine]
    deflate(result, prior)
    result.metrics["trial_model"] = model_name
    return trials


def record_and_deflate(
    log: TrialStore, model_name: str, result: Any, context: dict[str, Any]
) -> list[Trial]:
    """Deflate ``result``'s DSR by every other trial recorded under ``model_name``, then record
    this run's configurations as trials of it. Returns the recorded trials."""
    trials = deflate_by_log(log, model_name, result, context)
    log.record(model_name, trials)
    return trials
