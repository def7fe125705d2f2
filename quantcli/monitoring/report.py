"""The HTML drift report: a summary table and, per feature, baseline vs current histograms.

The histograms show the shares of each window in the 10 decile bins of the baseline -- exactly
what PSI and the JS divergence compare -- as embedded PNGs (matplotlib, Agg backend, imported
only here), so the report is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from quantcli.monitoring.drift import DriftResult

#: Plot at most this many features (worst first); the table always lists every feature.
MAX_PLOTS = 60


class _HistogramPlotter:
    """One reusable Agg figure: building a figure per feature costs more than drawing it."""

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self._plt = plt
        self.fig, self.ax = plt.subplots(figsize=(7.5, 2.6), dpi=80)
        # fixed margins instead of tight_layout, which renders the figure an extra time
        self.fig.subplots_adjust(left=0.08, right=0.99, top=0.88, bottom=0.33)

    def png_base64(self, feature: dict[str, Any]) -> str:
        edges = feature["edges"]
        labels = [f"<= {edges[0]:.3g}"]
        labels += [f"{lo:.3g}..{hi:.3g}" for lo, hi in itertools.pairwise(edges)]
        labels += [f"> {edges[-1]:.3g}"]
        b = np.asarray(feature["baseline_counts"], dtype=float)
        c = np.asarray(feature["current_counts"], dtype=float)
        b = b / b.sum() if b.sum() else b
        c = c / c.sum() if c.sum() else c
        x = np.arange(len(labels))
        ax = self.ax
        ax.clear()
        ax.bar(x - 0.2, b, width=0.4, label="baseline", color="#4c72b0")
        ax.bar(x + 0.2, c, width=0.4, label="current", color="#dd8452")
        ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=7)
        ax.set_ylabel("share of rows", fontsize=8)
        ax.set_title(
            f"{feature['feature']}: PSI {feature['psi']:.4f}, KS {feature['ks_statistic']:.4f}, "
            f"JS {feature['js_divergence']:.4f}",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        buf = io.BytesIO()
        # no timestamp in the PNG metadata: the same result gives the same bytes
        self.fig.savefig(buf, format="png", metadata={"Software": None})
        return base64.b64encode(buf.getvalue()).decode("ascii")

    def close(self) -> None:
        self._plt.close(self.fig)


def _fmt(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return format(x, spec)
    return html.escape(str(x))


def render_drift_html(result: DriftResult | dict[str, Any], max_plots: int = MAX_PLOTS) -> str:
    """The report as one HTML string (histograms embedded as base64 PNGs)."""
    r = result.to_dict() if isinstance(result, DriftResult) else result
    rows = []
    for f in r["features"]:
        cls = f["psi_band"]
        b, c = f["baseline"], f["current"]
        cells = [
            html.escape(f["feature"]),
            _fmt(f["psi"]),
            cls,
            _fmt(f["ks_statistic"]),
            _fmt(f["ks_pvalue"], ".3g"),
            _fmt(f["js_divergence"]),
            "yes" if f["drifted"] else "no",
            f"{_fmt(b['mean'])} / {_fmt(c['mean'])}",
            f"{_fmt(b['std'])} / {_fmt(c['std'])}",
            f"{b['n_null']}/{b['n_nan']}/{b['n_inf']} | {c['n_null']}/{c['n_nan']}/{c['n_inf']}",
            f"{b['n_finite']} / {c['n_finite']}",
        ]
        rows.append(f"<tr class='{cls}'>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    plots = []
    if max_plots > 0 and r["features"]:
        plotter = _HistogramPlotter()
        try:
            for f in r["features"][:max_plots]:
                plots.append(
                    f"<figure><img alt='{html.escape(f['feature'])} histogram' "
                    f"src='data:image/png;base64,{plotter.png_base64(f)}'></figure>"
                )
        finally:
            plotter.close()
    conventions = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in r["conventions"].items()
    )
    thresholds = ", ".join(f"{k} = {v:g}" for k, v in r["thresholds"].items())
    verdict = (
        f"<p class='significant'>Significant drift (PSI >= 0.25): "
        f"{html.escape(', '.join(r['significant_features']))}</p>"
        if r["significant_features"]
        else "<p>No feature in the significant PSI band.</p>"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>qcli drift report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
td:first-child {{ text-align: left; }}
tr.significant {{ background: #f8d7da; }} tr.moderate {{ background: #fff3cd; }}
p.significant {{ color: #a00; font-weight: bold; }}
figure {{ display: inline-block; margin: 4px; }}
</style></head><body>
<h1>Feature drift report</h1>
<p>Checked at {html.escape(r["timestamp"])}. Baseline: {html.escape(r["baseline_source"])}.
Current: {html.escape(r["current_source"])}.</p>
<p>{r["n_drifted"]} of {r["n_features"]} features drifted
({html.escape(", ".join(r["drifted_features"]) or "none")}). Thresholds: {thresholds}.</p>
{verdict}
<h2>Conventions</h2><ul>{conventions}</ul>
<h2>Per feature (worst first)</h2>
<table><tr><th>feature</th><th>PSI</th><th>band</th><th>KS D</th><th>KS p</th><th>JS div (bits)</th>
<th>drifted</th><th>mean b / c</th><th>std b / c</th><th>null/NaN/inf b | c</th>
<th>finite n b / c</th></tr>
{"".join(rows)}
</table>
<h2>Histograms: shares in the baseline's decile bins</h2>
{"".join(plots)}
</body></html>
"""


def write_drift_report(
    result: DriftResult | dict[str, Any], path: str | Path, max_plots: int = MAX_PLOTS
) -> Path:
    """Write the HTML report to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_drift_html(result, max_plots=max_plots), encoding="utf-8")
    return path


def write_histogram_pngs(
    result: DriftResult | dict[str, Any], out_dir: str | Path, max_plots: int = 6
) -> list[Path]:
    """Write the histograms of the ``max_plots`` worst features as ``<feature>.png`` files.

    The same pictures as the HTML report's (baseline vs current shares per decile bin), for
    reports that embed files; the features come in the result's order (worst first), the
    file names are prefixed with the rank so a directory listing keeps that order.
    """
    r = result.to_dict() if isinstance(result, DriftResult) else result
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if max_plots <= 0 or not r["features"]:
        return paths
    plotter = _HistogramPlotter()
    try:
        for rank, f in enumerate(r["features"][:max_plots], start=1):
            path = out / f"{rank:02d}_{f['feature']}.png"
            path.write_bytes(base64.b64decode(plotter.png_base64(f)))
            paths.append(path)
    finally:
        plotter.close()
    return paths
