"""The report directory of a backtest: PNG plots and the metrics JSON.

Files (all deterministic for a deterministic result):

* ``metrics.json`` -- :meth:`BacktestResult.to_dict` (NaN/inf written as ``null``);
* ``path_returns.csv`` -- per-period net strategy returns of every path (``ts``, ``path_0``
  ...), then the gross ones (``gross_0`` ...);
* ``equity.png`` -- compounded wealth of every path net of costs, starting at 1, with the gated
  path's gross wealth dashed beside it;
* ``drawdowns.png`` -- the net drawdown of every path (``wealth / peak - 1``);
* ``sharpe_distribution.png`` -- histogram of the paths' annualized net Sharpe ratios;
* ``report.html`` -- one self-contained page: the verdict, net and gross figures, turnover,
  cost drag, break-even cost, the per-path table and the plots (embedded).

Plots use matplotlib's object API on an Agg canvas (imported here, lazily for the CLI), so no
global pyplot state or display is touched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from html import escape
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
    gross = result.gross_path_returns
    if gross is not None:
        csv = csv.with_columns(*[pl.Series(f"gross_{p}", gross[p]) for p in range(rets.shape[0])])
    csv.write_csv(out / "path_returns.csv")
    files["path_returns"] = str(out / "path_returns.csv")

    gated = result.metrics.get("gated_path")
    fig, ax = _figure("Equity of every CPCV path, net of costs (wealth from 1)", "wealth")
    for p in range(rets.shape[0]):
        lw, alpha = (2.0, 1.0) if p == gated else (0.8, 0.6)
        ax.plot(x, np.cumprod(1.0 + rets[p]), lw=lw, alpha=alpha, label=f"path {p} net")
    if gross is not None and gated is not None:
        ax.plot(x, np.cumprod(1.0 + gross[gated]), "k--", lw=1.2, label=f"path {gated} gross")
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

    (out / "report.html").write_text(report_html(result, out))
    files["html"] = str(out / "report.html")
    return files


def _cell(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec)


def report_html(result: BacktestResult, out_dir: Path) -> str:
    """The self-contained HTML page of a report directory (its PNGs embedded as base64)."""
    m = result.metrics
    rows = [
        ("verdict", "PASS" if result.passed else "FAIL: " + "; ".join(result.reasons)),
        ("strategy", result.strategy.get("rule", "")),
        ("net Sharpe (gated path)", _cell(m.get("sharpe"), ".3f")),
        ("gross Sharpe (gated path)", _cell(m.get("gross_sharpe"), ".3f")),
        ("PSR (net)", _cell(m.get("psr"), ".4f")),
        (f"DSR (net, {m.get('n_trials')} trials)", _cell(m.get("dsr"), ".4f")),
        ("PBO (net)", _cell(m.get("pbo"), ".3f")),
        ("max drawdown (net)", _cell(m.get("max_drawdown"), ".2%")),
        ("annual return net", _cell(m.get("annual_return"), ".2%")),
        ("annual return gross", _cell(m.get("gross_annual_return"), ".2%")),
        (
            "equity net / gross (from 1)",
            f"{_cell(m.get('net_equity_final'), '.3f')} / "
            f"{_cell(m.get('gross_equity_final'), '.3f')}",
        ),
        ("turnover (x capital a year)", _cell(m.get("turnover_annual"), ".1f")),
        ("cost drag (a year)", _cell(m.get("cost_drag_annual"), ".2%")),
        ("break-even cost (bps per unit traded)", _cell(m.get("break_even_cost_bps"), ".1f")),
    ]
    summary = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    head = ("path", "net Sharpe", "gross Sharpe", "PSR", "max DD", "turnover/yr", "cost drag")
    paths = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(c)}</td>"
            for c in (
                f"{p['path']}{' *' if p['path'] == m.get('gated_path') else ''}",
                _cell(p["sharpe"], ".3f"),
                _cell(p.get("gross_sharpe"), ".3f"),
                _cell(p["psr"], ".4f"),
                _cell(p["max_drawdown"], ".2%"),
                _cell(p.get("turnover_annual"), ".1f"),
                _cell(p.get("cost_drag_annual"), ".2%"),
            )
        )
        + "</tr>"
        for p in result.path_metrics
    )
    images = "".join(
        f'<h2>{escape(name)}</h2><img alt="{escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode((out_dir / f"{name}.png").read_bytes()).decode()}">'
        for name in ("equity", "drawdowns", "sharpe_distribution")
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>CPCV backtest</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{text-align:left}"
        "</style></head><body><h1>CPCV backtest, net of costs</h1>"
        f"<table>{summary}</table><h2>Paths (* = gated)</h2><table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr>{paths}</table>{images}</body></html>\n"
    )
