"""The pipeline's run report: ``report.json`` and a self-contained ``report.html``.

The HTML embeds (base64) a stage-timing chart and every PNG the stages wrote (backtest equity
curves, drawdowns, drift histograms) so one file can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantcli.results import to_json

if TYPE_CHECKING:
    from quantcli.pipeline.run import PipelineResult

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
vertical-align:top}th{background:#f3f3f3}.ok{color:#1a7f37}.failed{color:#cf222e}
.skipped{color:#888}.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f6f8fa;padding:1px 4px}
"""


def _png_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _timing_chart(stages: list[dict[str, Any]]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    names = [s["name"] for s in stages][::-1]
    secs = [s["seconds"] for s in stages][::-1]
    colors = [
        "#1a7f37" if s["status"] == "ok" else "#cf222e" if s["status"] == "failed" else "#999"
        for s in stages
    ][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1))
    ax.barh(names, secs, color=colors)
    ax.set_xlabel("seconds")
    ax.set_title("Stage durations")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pngs_of(details: dict[str, Any]) -> list[Path]:
    """PNG files a stage points at (report directories or files named in its details)."""
    found: list[Path] = []
    for key, value in details.items():
        if not isinstance(value, str) or "report" not in key:
            continue
        p = Path(value)
        if p.is_dir():
            found.extend(sorted(p.glob("*.png")))
        elif p.suffix == ".png" and p.is_file():
            found.append(p)
    return found


def write_report(result: PipelineResult) -> Path:
    """Write ``report.json`` and ``report.html`` into ``result.report_dir``; return the HTML."""
    out_dir: Path = result.report_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    (out_dir / "report.json").write_text(to_json(data) + "\n")

    rows = []
    for s in data["stages"]:
        gate = s["gate"] or ""
        rows.append(
            f"<tr><td>{html.escape(s['title'])}</td><td class='{s['status']}'>{s['status']}</td>"
            f"<td class='{gate}'>{gate}</td><td>{s['seconds']:.1f} s</td>"
            f"<td>{html.escape(s['summary'])}</td></tr>"
        )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>quantcli pipeline "
        f"{data['run_id']}</title><style>{_STYLE}</style></head><body>",
        f"<h1>quantcli pipeline run {data['run_id']}</h1>",
        f"<p>Model <code>{html.escape(data['model_name'])}</code>; served from alias "
        f"<code>{data['served_alias']}</code>. Gates: "
        + (
            "<span class='pass'>all passed</span>"
            if data["gates_passed"]
            else "<span class='fail'>not all passed</span> (the model stays in staging)"
        )
        + f". quantcli {data['quantcli_version']}.</p>",
        "<table><tr><th>stage</th><th>status</th><th>gate</th><th>time</th><th>summary</th>"
        "</tr>" + "".join(rows) + "</table>",
    ]
    chart = _timing_chart(data["stages"])
    if chart:
        parts.append(f"<img alt='stage durations' src='data:image/png;base64,{chart}'>")
    for stage in result.stages:
        for png in _pngs_of(stage.details):
            parts.append(
                f"<h3>{html.escape(stage.title)}: {html.escape(png.stem)}</h3>"
                f"<img alt='{html.escape(png.name)}' src='data:image/png;base64,{_png_b64(png)}'>"
            )
    parts.append(
        "<h2>Details</h2><pre>"
        + html.escape(
            json.dumps({s["name"]: s["details"] for s in data["stages"]}, indent=1, default=str)[
                :200_000
            ]
        )
        + "</pre></body></html>"
    )
    path = out_dir / "report.html"
    path.write_text("\n".join(parts))
    return path
