"""The drift check as the CLI and cron run it: resolve windows, detect, report, record.

Every run is recorded in ``monitor_drift_runs`` (one transaction) so that ``retrain-check`` and
``guard`` read the latest drift verdict without recomputing it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from quantcli.errors import InputError
from quantcli.monitoring.drift import DriftDetector, DriftResult
from quantcli.monitoring.profile import BaselineProfile
from quantcli.monitoring.report import write_drift_report
from quantcli.monitoring.state import as_utc, monitoring_store, store_file, utc_now
from quantcli.monitoring.windows import DriftWindows, load_window, resolve_windows
from quantcli.results import Result
from quantcli.workspace import Workspace


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriftCheck(Result):
    """One recorded drift check: the :class:`DriftResult` and what the check wrote.

    ``passed`` is false when any feature's PSI is in the significant band (>= 0.25), the
    check's exit-1 condition; ``reasons`` name those features and their statistics.
    """

    drift: DriftResult
    report: str | None = None
    profile: str | None = None
    run_id: str | None = None
    windows: dict[str, str | None] = dataclasses.field(default_factory=dict)

    def message(self) -> str:
        n = len(self.drift.significant_features)
        return f"significant drift (PSI >= 0.25) in {n} feature(s)"

    def to_dict(self) -> dict[str, Any]:
        """The drift result's keys, then ``report``, ``profile``, ``run_id``, ``windows``."""
        return {
            **self.drift.to_dict(),
            "report": self.report,
            "profile": self.profile,
            "run_id": self.run_id,
            "windows": self.windows,
        }


def _significant_reasons(result: DriftResult) -> list[str]:
    return [
        f"{f.feature}: PSI {f.psi:.4f}, KS p {f.ks_pvalue:.3g}, JS {f.js_divergence:.4f}"
        for f in result.features
        if f.psi_band == "significant"
    ]


def run_drift_check(
    baseline: str | None = None,
    current: str | None = None,
    *,
    last: str | None = None,
    baseline_last: str | None = None,
    features: Sequence[str] | None = None,
    feature_set: str = "technical_v1",
    thresholds: dict[str, float] | None = None,
    save_profile: str | Path | None = None,
    report: str | Path | None = "auto",
    max_plots: int = 60,
    record: bool = True,
    workspace: Workspace | None = None,
    on_step: Callable[[str], None] | None = None,
) -> DriftCheck:
    """Run one drift check; returns the result and what was written (report, profile, run id).

    Parameters
    ----------
    baseline, current
        A PERIOD ``START:END`` of the stored features or a FILE (see
        :mod:`quantcli.monitoring.windows`); the baseline may also be a saved profile (``.npz``).
    last, baseline_last
        Instead of ``current`` / ``baseline``: a DURATION (``63d``, ``13w``, ``3m``, ``1y``).
        ``last`` is the window ending on the latest stored bar; ``baseline_last`` the window
        just before the current one (:func:`quantcli.monitoring.windows.resolve_windows`).
        The resolved windows are returned as ``windows``.
    thresholds
        The :class:`DriftDetector` thresholds; default the ``[drift]`` section of the
        workspace's config.
    report
        ``"auto"`` writes ``$QCLI_HOME/reports/drift-<timestamp>.html``; a path writes there;
        ``None`` writes no report.
    """
    ws = workspace or Workspace.from_env()
    store_path = ws.offline_path
    step = on_step or (lambda _msg: None)
    # an unwritable output must fail before minutes of work, not after them
    if save_profile is not None:
        check_output_path(save_profile, "--save-profile")
    if report is not None and report != "auto":
        check_output_path(report, "--report")
    detector = DriftDetector(**(thresholds if thresholds is not None else ws.section("drift")))
    windows = resolve_windows(
        baseline,
        current,
        last=last,
        baseline_last=baseline_last,
        feature_set=feature_set,
        store_path=store_path,
    )
    (base, base_src), (cur, cur_src) = _load_windows(windows, feature_set, store_path, step)
    written: dict[str, Any] = {}
    if not isinstance(base, BaselineProfile):
        step("profiling the baseline")
        base = detector.profile(base, features, source=base_src)
        if save_profile is not None:
            written["profile"] = str(base.save(save_profile))
    step("testing every feature")
    result = detector.detect_feature_drift(
        base, cur, features, baseline_source=base_src, current_source=cur_src
    )
    if report is not None:
        step("writing the HTML report")
        if report == "auto":
            stamp = result.timestamp.replace(":", "").replace("+0000", "Z")
            report = ws.reports_dir / f"drift-{stamp}.html"
        written["report"] = str(write_drift_report(result, report, max_plots=max_plots))
    if record:
        written["run_id"] = record_drift_run(result, workspace=ws)
    return DriftCheck(
        passed=not result.significant_features,
        reasons=_significant_reasons(result),
        drift=result,
        windows=windows.to_dict(),
        **written,
    )


def check_output_path(path: str | os.PathLike[str], option: str) -> Path:
    """Create ``path``'s directory and check a file can be written there.

    Raises
    ------
    InputError
        ``path`` is a directory, or its directory cannot be created or written; the message
        names ``option``.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory (give a file name)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise InputError(f"{option} {path}: cannot create its directory ({why})") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{option} {path}: not writable")
    return path


def _load_windows(
    windows: DriftWindows, feature_set: str, store_path: Path, step: Callable[[str], None]
) -> tuple[tuple[Any, str], tuple[Any, str]]:
    """``(baseline, source), (current, source)``: frames, or a saved profile as the baseline."""
    step("loading the baseline window")
    base = load_window(
        windows.baseline,
        option=windows.baseline_option,
        feature_set=feature_set,
        store_path=store_path,
    )
    step("loading the current window")
    cur = load_window(
        windows.current,
        option=windows.current_option,
        feature_set=feature_set,
        store_path=store_path,
        allow_profile=False,
    )
    return base, cur


def record_drift_run(
    result: DriftResult,
    *,
    workspace: Workspace | None = None,
    store_path: str | os.PathLike[str] | None = None,
) -> str:
    """Append the run's summary to ``monitor_drift_runs``; returns its run id.

    ``checked_at`` is the recording time in microseconds, strictly after every earlier run's
    (the result's own timestamp has whole seconds: two runs within a second would tie and
    "the latest" would be decided by the random run id).

    ``store_path`` is deprecated: the offline store file, instead of the workspace's."""
    d = result.to_dict()
    run_id = uuid.uuid4().hex[:16]
    summary = {k: v for k, v in d.items() if k != "features"}
    summary["features"] = [
        {k: f[k] for k in ("feature", "psi", "psi_band", "ks_pvalue", "js_divergence", "drifted")}
        for f in d["features"]
    ]
    with monitoring_store(store_file(workspace, store_path)) as store, store.transaction() as con:
        last = con.execute("SELECT max(checked_at) FROM monitor_drift_runs").fetchone()[0]
        checked_at = utc_now()
        if last is not None and checked_at <= as_utc(last):
            checked_at = as_utc(last) + timedelta(microseconds=1)
        con.execute(
            "INSERT INTO monitor_drift_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                checked_at,
                result.baseline_source,
                result.current_source,
                len(result.features),
                len(result.drifted_features),
                json.dumps(result.drifted_features),
                json.dumps(result.significant_features),
                json.dumps(summary),
            ],
        )
    return run_id


def latest_drift_run(
    *,
    workspace: Workspace | None = None,
    store_path: str | os.PathLike[str] | None = None,
    since: datetime | None = None,
) -> dict[str, Any] | None:
    """The most recent recorded drift run (its summary dict), or None.

    ``store_path`` is deprecated: the offline store file, instead of the workspace's."""
    with monitoring_store(store_file(workspace, store_path)) as store:
        row = store.con.execute(
            "SELECT summary, checked_at FROM monitor_drift_runs ORDER BY checked_at DESC, run_id "
            "LIMIT 1"
        ).fetchone()
    if row is None:
        return None
    if since is not None and as_utc(row[1]) < as_utc(since):
        return None
    return json.loads(row[0])
