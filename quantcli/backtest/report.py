"""The report directory of a backtest: PNG plots and the metrics JSON.

Files (all deterministic for a deterministic result):

* ``metrics.json`` -- :meth:`BacktestResult.to_dict` (NaN/inf written as ``null``);
* ``path_returns.csv`` -- per-period strategy returns of every path (``ts``, ``path_0`` ...);
* ``equity.png`` -- compounded wealth of every path, starting at 1;
* ``drawdowns.png`` -- the drawdown of every path (``wealth / peak - 1``);
* ``sharpe_distribution.png`` -- histogram of the paths' annualized Sharpe ratios.

Plots use matplotlib's object API on an Agg canvas (imported here, lazily for the CLI), so no
global pyplot state or display is touched.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quantcli.backtest import stats
from quantcli.backtest.engine import BacktestResult


def _finite(obj: Any) -> Any:
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def result_json(result: BacktestResult) -> str:
    """The metrics JSON text: sorted keys, NaN as null, two-space indent."""
    return json.dumps(_finite(result.to_dict()), indent=2, sort_keys=True) + "\n"


def report_id(result: BacktestResult) -> str:
    """A content id: the first 12 hex digits of the sha256 of the metrics JSON."""
    return hashlib.sha256(result_json(result).encode()).hexdigest()[:12]


def _figure(title: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    # no "Software" stamp: the PNG bytes depend only on the data
    fig.savefig(path, format="png", metadata={"Software": None})


def write_report(result: BacktestResult, out_dir: str | Path) -> dict[str, str]:
    """Write the report files into ``out_dir`` (created); returns ``{name: path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    (out / "metrics.json").write_text(result_json(result))
    files["metrics"] = str(out / "metrics.json")

    rets = result.path_returns
    x = np.asarray(result.period_ts).astype("datetime64[us]")
    csv = pl.DataFrame({"ts": x}).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    csv = csv.with_columns(*[pl.Series(f"path_{p}", rets[p]) for p in range(rets.shape[0])])
    csv.write_csv(out / "path_returns.csv")
    files["path_returns"] = str(out / "path_returns.csv")

    gated = result.metrics.get("gated_path")
    fig, ax = _figure("Equity of every CPCV path (wealth from 1)", "wealth")
    for p in range(rets.shape[0]):
        lw, alpha = (2.0, 1.0) if p == gated else (0.8, 0.6)
        ax.plot(x, np.cumprod(1.0 + rets[p]), lw=lw, alpha=alpha, label=f"path {p}")
    ax.legend(fontsize=7, ncol=3)
    _save(fig, out / "equity.png")
    files["equity"] = str(out / "equity.png")

    fig, ax = _figure("Drawdown of every CPCV path", "drawdown (fraction)")
    for p in range(rets.shape[0]):
        ax.plot(x, stats.drawdown(rets[p]), lw=0.8, alpha=0.7)
    ax.axhline(result.thresholds["max_drawdown"], color="red", ls="--", label="gate")
    ax.legend(fontsize=7)
    _save(fig, out / "drawdowns.png")
    files["drawdowns"] = str(out / "drawdowns.png")

    from matplotlib.ticker import MaxNLocator

    sharpes = [m["sharpe"] for m in result.path_metrics if math.isfinite(m["sharpe"])]
    fig, ax = _figure("Annualized Sharpe ratio of the CPCV paths", "paths")
    ax.hist(sharpes, bins=max(5, min(30, len(sharpes))), color="tab:blue", alpha=0.8)
    ax.axvline(result.thresholds["min_sharpe"], color="red", ls="--", label="gate")
    if sharpes:
        ax.axvline(float(np.median(sharpes)), color="black", ls=":", label="median path")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("annualized Sharpe ratio")
    ax.legend(fontsize=7)
    _save(fig, out / "sharpe_distribution.png")
    files["sharpe_distribution"] = str(out / "sharpe_distribution.png")
    return files
