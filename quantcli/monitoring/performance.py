"""Rolling live performance of a served model, persisted in the offline store.

Conventions (stated in every result):

* The strategy takes ``sign(prediction)`` of the realised forward return ``actual``: its return on
  a logged prediction is ``sign(prediction) * actual`` (``sign(0) = 0``, no position).
* Predictions sharing a timestamp form one period; the period return is their mean (an
  equal-weighted book across symbols). Sharpe and drawdown are computed on period returns.
* **Sharpe**: ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` (annualized, rf = 0);
  ``periods_per_year`` is the model's feature set's (its declared bar frequency: 252 for daily
  bars, e.g. 6,048 for hourly ones), or given explicitly. NaN below 2 periods or for zero
  variance.
* **Max drawdown**: on compounded wealth ``prod(1 + r)`` starting at 1 (a first-period loss
  counts), a negative fraction: -0.20 is a 20 % drawdown.
* **Win rate**: share of positioned predictions (``sign(prediction) != 0``) with a positive return.
* **Direction accuracy**: share of predictions with ``sign(prediction) == sign(actual)``.
* **Correlation**: Pearson correlation of prediction and actual over the window.
* The window is the last ``window_size`` predictions whose ``actual`` is known (by ``ts``, then
  logging order). **Degraded** when Sharpe < ``min_sharpe`` or drawdown < ``max_drawdown``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from quantcli._interop import to_polars
from quantcli.errors import InputError
from quantcli.features.definitions import periods_per_year as resolve_periods
from quantcli.frequency import TRADING_DAYS
from quantcli.monitoring.state import as_utc, monitoring_store, store_file, utc_now
from quantcli.monitoring.windows import read_feature_file
from quantcli.results import Result
from quantcli.workspace import Workspace

_WINDOW_SQL = """
SELECT ts, prediction, actual FROM (
    SELECT ts, seq, prediction, actual FROM monitor_predictions
    WHERE monitor = ? AND actual IS NOT NULL
    ORDER BY ts DESC, seq DESC LIMIT ?
) ORDER BY ts, seq
"""


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PerformanceMetrics(Result):
    """The rolling metrics of one monitor (see the module conventions); ``passed`` is false
    when the model is degraded, and ``reasons`` say why."""

    monitor: str
    computed_at: str
    window_size: int
    n_samples: int
    n_periods: int
    sharpe: float | None
    max_drawdown: float | None
    win_rate: float | None
    direction_accuracy: float | None
    correlation: float | None
    cumulative_return: float | None
    window_start: str | None
    window_end: str | None
    thresholds: dict[str, float]
    periods_per_year: float
    conventions: dict[str, str]

    failure_message: ClassVar[str] = "performance degraded"

    @property
    def degraded(self) -> bool:
        return not self.passed

    def to_dict(self) -> dict[str, Any]:
        keys = ("monitor", "computed_at", "window_size", "n_samples", "n_periods", "sharpe",
                "max_drawdown", "win_rate", "direction_accuracy", "correlation",
                "cumulative_return", "window_start", "window_end")  # fmt: skip
        return {
            **{k: getattr(self, k) for k in keys},
            "degraded": self.degraded,
            "reasons": list(self.reasons),
            "thresholds": self.thresholds,
            "periods_per_year": self.periods_per_year,
            "conventions": self.conventions,
        }


def rolling_metrics(
    ts: Sequence[Any] | np.ndarray,
    prediction: np.ndarray,
    actual: np.ndarray,
    periods_per_year: float = TRADING_DAYS,
) -> dict[str, float | int]:
    """The window's metrics from plain arrays (a pure function; see the module conventions).

    Parameters
    ----------
    ts
        Timestamps of the predictions, sorted ascending (equal timestamps form one period).
    prediction, actual
        The predictions and the realised forward returns (fractions, 0.01 = 1 %).
    """
    pred = np.asarray(prediction, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    n = pred.size
    if n == 0:
        nan = float("nan")
        return {
            "n_samples": 0,
            "n_periods": 0,
            "sharpe": nan,
            "max_drawdown": nan,
            "win_rate": nan,
            "direction_accuracy": nan,
            "correlation": nan,
            "cumulative_return": nan,
        }
    pos = np.sign(pred)
    strat = pos * act
    period = (
        pl.DataFrame({"ts": list(ts), "r": strat})
        .group_by("ts", maintain_order=True)
        .agg(pl.col("r").mean())
    )
    r = period["r"].to_numpy()
    n_periods = r.size
    if n_periods >= 2:
        sd = float(np.std(r, ddof=1))
        sharpe = float(np.mean(r)) / sd * math.sqrt(periods_per_year) if sd > 0 else float("nan")
    else:
        sharpe = float("nan")
    wealth = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate(([1.0], wealth)))[1:]
    max_dd = float(np.min(wealth / peak - 1.0))
    positioned = pos != 0
    win_rate = float(np.mean(strat[positioned] > 0)) if positioned.any() else float("nan")
    direction = float(np.mean(pos == np.sign(act)))
    if n >= 2 and np.std(pred) > 0 and np.std(act) > 0:
        corr = float(np.corrcoef(pred, act)[0, 1])
    else:
        corr = float("nan")
    return {
        "n_samples": int(n),
        "n_periods": int(n_periods),
        "sharpe": sharpe,
        "max_drawdown": max_dd,
        "win_rate": win_rate,
        "direction_accuracy": direction,
        "correlation": corr,
        "cumulative_return": float(wealth[-1] - 1.0),
    }


class PerformanceMonitor:
    """Log predictions and outcomes; compute rolling metrics; flag degradation.

    State lives in the offline store (``monitor_predictions``, ``monitor_metrics``), so a new
    object -- or a new process after a restart -- sees everything logged before.

    Parameters
    ----------
    window_size
        Number of most recent predictions with a known outcome in the rolling window.
    min_sharpe
        Annualized Sharpe below which the model counts as degraded.
    max_drawdown
        Drawdown (negative fraction) beyond which the model counts as degraded.
    name
        The monitored model alias (one log per alias); default ``production``.
    workspace
        Where the state lives (its offline store); default :meth:`Workspace.from_env`.
    store_path
        Deprecated: the offline store file, instead of the workspace's.
    periods_per_year
        Annualization factor of the Sharpe ratio; default the declared periods per year of
        ``feature_set``.
    feature_set
        The feature set the model was trained on: its ``periods_per_year`` annualizes the
        Sharpe ratio. Neither given: daily bars, 252.
    """

    def __init__(
        self,
        window_size: int = 1000,
        min_sharpe: float = 1.0,
        max_drawdown: float = -0.25,
        *,
        name: str = "production",
        store_path: str | os.PathLike[str] | None = None,
        periods_per_year: float | None = None,
        feature_set: str | None = None,
        workspace: Workspace | None = None,
    ) -> None:
        if not isinstance(window_size, int) or window_size < 2:
            raise InputError(
                f"`window_size` must be an integer >= 2, got `window_size={window_size!r}`"
            )
        if not (isinstance(max_drawdown, int | float) and -1.0 <= max_drawdown <= 0.0):
            raise InputError(
                f"`max_drawdown` must be a negative fraction in [-1, 0] (e.g. -0.25), "
                f"got `max_drawdown={max_drawdown!r}`"
            )
        self.window_size = window_size
        self.min_sharpe = float(min_sharpe)
        self.max_drawdown = float(max_drawdown)
        self.name = name
        self.store_path = store_file(workspace, store_path)
        self.feature_set = feature_set
        self.periods_per_year = resolve_periods(feature_set, periods_per_year)

    # -- logging --------------------------------------------------------------------------
    def log_prediction(
        self, timestamp: datetime | str, prediction: float, actual: float | None = None
    ) -> None:
        """Log one prediction (and its realised forward return, if already known)."""
        self.log_predictions(
            pl.DataFrame(
                {"ts": [as_utc(timestamp)], "prediction": [prediction], "actual": [actual]},
                schema={
                    "ts": pl.Datetime("us", "UTC"),
                    "prediction": pl.Float64,
                    "actual": pl.Float64,
                },
            )
        )

    def log_predictions(self, frame: pl.DataFrame) -> int:
        """Log many predictions at once; one transaction. Returns the number of rows logged.

        Columns ``ts``, ``prediction``, and optionally ``actual`` (null until known) and
        ``symbol`` (needed to attach outcomes later with :meth:`record_outcomes`).
        """
        frame = to_polars(frame, "frame")
        missing = [c for c in ("ts", "prediction") if c not in frame.columns]
        if missing:
            raise InputError(
                f"predictions frame lacks column(s): {', '.join(missing)}",
                hint="columns: ts, prediction, and optionally actual, symbol",
            )
        df = frame.select(
            pl.col("symbol").cast(pl.String)
            if "symbol" in frame.columns
            else pl.lit(None, pl.String).alias("symbol"),
            pl.col("ts").cast(pl.Datetime("us", "UTC")),
            pl.col("prediction").cast(pl.Float64),
            pl.col("actual").cast(pl.Float64)
            if "actual" in frame.columns
            else pl.lit(None, pl.Float64).alias("actual"),
        )
        bad = df.filter(
            pl.col("ts").is_null()
            | pl.col("prediction").is_null()
            | ~pl.col("prediction").is_finite()
            | (pl.col("actual").is_not_null() & ~pl.col("actual").is_finite())
        )
        if bad.height:
            raise InputError(
                f"{bad.height} prediction row(s) with a null timestamp, a null or non-finite "
                f"prediction, or a non-finite actual (first: {bad.row(0)})"
            )
        logged_at = utc_now()
        df = df.with_columns(pl.lit(self.name).alias("monitor"), pl.lit(logged_at).alias("la"))
        with monitoring_store(self.store_path) as store, store.transaction() as con:
            con.register("_incoming", df.to_arrow())
            con.execute(
                "INSERT INTO monitor_predictions (monitor, symbol, ts, prediction, actual, "
                "logged_at) SELECT monitor, symbol, ts, prediction, actual, la FROM _incoming"
            )
            con.unregister("_incoming")
        return df.height

    def record_outcomes(self, frame: pl.DataFrame) -> int:
        """Attach realised outcomes to predictions logged earlier without one; one transaction.

        ``frame`` has ``symbol``, ``ts`` (the prediction's as-of time) and ``actual``. Only
        predictions of this monitor whose ``actual`` is still null are updated (an outcome is
        never overwritten). Returns the number of predictions updated.
        """
        missing = [c for c in ("symbol", "ts", "actual") if c not in frame.columns]
        if missing:
            raise InputError(f"outcomes frame lacks column(s): {', '.join(missing)}")
        df = frame.select(
            pl.col("symbol").cast(pl.String),
            pl.col("ts").cast(pl.Datetime("us", "UTC")),
            pl.col("actual").cast(pl.Float64),
        )
        bad = df.filter(
            pl.col("symbol").is_null() | pl.col("ts").is_null() | ~pl.col("actual").is_finite()
        )
        if bad.height:
            raise InputError(
                f"{bad.height} outcome row(s) with a null symbol or timestamp or a null or "
                f"non-finite actual (first: {bad.row(0)})"
            )
        with monitoring_store(self.store_path) as store, store.transaction() as con:
            con.register("_outcomes", df.to_arrow())
            row = con.execute(
                "UPDATE monitor_predictions AS p SET actual = o.actual FROM _outcomes AS o "
                "WHERE p.monitor = ? AND p.symbol = o.symbol AND p.ts = o.ts "
                "AND p.actual IS NULL RETURNING p.seq",
                [self.name],
            ).fetchall()
            con.unregister("_outcomes")
        return len(row)

    # -- metrics --------------------------------------------------------------------------
    def window(self) -> pl.DataFrame:
        """The rolling window: the last ``window_size`` predictions with a known outcome."""
        with monitoring_store(self.store_path) as store:
            return store.con.cursor().sql(_WINDOW_SQL, params=[self.name, self.window_size]).pl()

    def calculate_metrics(
        self, *, record: bool = True, now: datetime | None = None
    ) -> PerformanceMetrics:
        """Rolling Sharpe, max drawdown, win rate, direction accuracy, correlation, degradation.

        With ``record`` the result is appended to ``monitor_metrics`` (the guard reads that
        history for "Sharpe below 0.8 for 3 consecutive days").
        """
        w = self.window()
        m = rolling_metrics(
            w["ts"].to_list(),
            w["prediction"].to_numpy(),
            w["actual"].to_numpy(),
            self.periods_per_year,
        )
        reasons = self._degradation(m)
        computed_at = as_utc(now) if now is not None else utc_now()
        result = PerformanceMetrics(
            passed=not reasons,
            reasons=reasons,
            monitor=self.name,
            computed_at=computed_at.isoformat(),
            window_size=self.window_size,
            **{k: (_nan_to_none(v) if isinstance(v, float) else v) for k, v in m.items()},
            window_start=w["ts"][0].isoformat() if w.height else None,
            window_end=w["ts"][-1].isoformat() if w.height else None,
            thresholds={"min_sharpe": self.min_sharpe, "max_drawdown": self.max_drawdown},
            periods_per_year=self.periods_per_year,
            conventions={
                "strategy": "sign(prediction) * actual; predictions sharing ts average into one "
                "period",
                "sharpe": f"mean/std(ddof=1) * sqrt({self.periods_per_year:g}), rf = 0",
                "max_drawdown": "compounded wealth from 1, negative fraction",
            },
        )
        if record:
            self._record(computed_at, result)
        return result

    def _degradation(self, m: dict[str, Any]) -> list[str]:
        """Why the window counts as degraded (empty when it does not, or has < 2 periods)."""
        reasons = []
        if m["n_periods"] >= 2:
            if not (math.isfinite(m["sharpe"]) and m["sharpe"] >= self.min_sharpe):
                reasons.append(
                    f"rolling Sharpe {m['sharpe']:.3f} below the minimum {self.min_sharpe:g}"
                )
            if m["max_drawdown"] < self.max_drawdown:
                reasons.append(
                    f"max drawdown {m['max_drawdown']:.2%} beyond the limit {self.max_drawdown:.0%}"
                )
        return reasons

    def _record(self, computed_at: datetime, result: PerformanceMetrics) -> None:
        with monitoring_store(self.store_path) as store, store.transaction() as con:
            con.execute(
                "INSERT INTO monitor_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    self.name,
                    computed_at,
                    result.n_samples,
                    result.n_periods,
                    result.sharpe,
                    result.max_drawdown,
                    result.win_rate,
                    result.direction_accuracy,
                    result.correlation,
                    result.degraded,
                    json.dumps(result.to_dict()),
                ],
            )

    def metrics_history(self, days: int | None = None) -> list[dict[str, Any]]:
        """Recorded metrics, oldest first; with ``days``, the last record of each of the last
        ``days`` calendar days (UTC) that have one."""
        with monitoring_store(self.store_path) as store:
            rows = store.con.execute(
                "SELECT payload FROM monitor_metrics WHERE monitor = ? ORDER BY computed_at",
                [self.name],
            ).fetchall()
        history = [json.loads(r[0]) for r in rows]
        if days is None:
            return history
        by_day: dict[str, dict[str, Any]] = {}
        for h in history:
            by_day[as_utc(h["computed_at"]).date().isoformat()] = h
        return [by_day[d] for d in sorted(by_day)[-days:]]

    def n_samples_since(self, since: datetime | None) -> int:
        """Predictions with a known outcome whose ``ts`` is after ``since`` (all if None)."""
        with monitoring_store(self.store_path) as store:
            if since is None:
                row = store.con.execute(
                    "SELECT count(*) FROM monitor_predictions WHERE monitor = ? "
                    "AND actual IS NOT NULL",
                    [self.name],
                ).fetchone()
            else:
                row = store.con.execute(
                    "SELECT count(*) FROM monitor_predictions WHERE monitor = ? "
                    "AND actual IS NOT NULL AND ts > ?",
                    [self.name, as_utc(since)],
                ).fetchone()
        return int(row[0]) if row else 0


def check_performance(
    *,
    log: str | os.PathLike[str] | None = None,
    outcomes: str | os.PathLike[str] | None = None,
    window: int | None = None,
    feature_set: str | None = None,
    monitor: str = "production",
    workspace: Workspace | None = None,
    on_note: Callable[[str], None] | None = None,
) -> PerformanceMetrics:
    """``qcli monitor performance``: log the predictions file ``log`` and attach the outcomes
    file ``outcomes`` (each optional), then compute and record the rolling metrics.

    Thresholds and the default window come from the ``[monitor]`` section of the workspace's
    config; ``on_note`` hears what was logged or attached.
    """
    ws = workspace or Workspace.from_env()
    cfg = ws.section("monitor")
    # 0 is not "unset": it must not silently fall back to the configured window
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or not 2 <= window < 2**63
    ):
        raise InputError(f"--window must be a whole number in [2, 2**63), got {window!r}")
    mon = PerformanceMonitor(
        window_size=cfg["window_size"] if window is None else window,
        min_sharpe=cfg["min_sharpe"],
        max_drawdown=cfg["max_drawdown"],
        name=monitor,
        feature_set=feature_set,
        workspace=ws,
    )
    note = on_note or (lambda _message: None)
    if log is not None:
        n = mon.log_predictions(read_feature_file(Path(log), "--log"))
        note(f"logged {n} predictions from {log}")
    if outcomes is not None:
        n = mon.record_outcomes(read_feature_file(Path(outcomes), "--outcomes"))
        note(f"attached {n} outcomes from {outcomes}")
    return mon.calculate_metrics()
