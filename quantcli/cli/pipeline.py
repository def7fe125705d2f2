"""`qcli pipeline run`: the whole flow in one command."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from quantcli.cli._choices import Family, OnlineStore, deprecated_alias
from quantcli.cli._common import JsonOpt, emit, finish, stderr
from quantcli.pipeline.run import PipelineResult, run_pipeline
from quantcli.workspace import Workspace

app = typer.Typer(help="Run the whole flow in one command.", no_args_is_help=True)


@app.command()
def run(
    sample: Annotated[
        bool, typer.Option("--sample", help="Run on the bundled real sample (SPX and IXIC).")
    ] = False,
    inputs: Annotated[
        list[Path] | None,
        typer.Option("--input", help="CSV or Parquet bars (repeatable) instead of the sample."),
    ] = None,
    symbol: Annotated[
        str | None, typer.Option("--symbol", help="Symbol for --input files without one.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML overriding the embedded defaults.")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Registered model name.")] = "qcli_sample",
    family: Annotated[Family, typer.Option("--family", help="Model family to train.")] = (
        Family.lgbm
    ),
    model: Annotated[
        Family | None,
        typer.Option("--model", hidden=True, help="Deprecated spelling of --family."),
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: local).")
    ] = None,
    online_store: Annotated[
        OnlineStore, typer.Option("--online-store", help="Online store: embedded sqlite or redis.")
    ] = OnlineStore.sqlite,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", envvar="QCLI_REDIS_URL", help="For redis.")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when any gate fails (default: report only).")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Ingest -> features -> CPCV backtest -> train/register -> ONNX + parity -> scan ->
    promote (gated) -> materialize -> predict (audited) -> drift report.

    Gate verdicts are reported honestly. On the real sample the model may fail the Sharpe
    gate: the pipeline then says so, keeps the version in staging, serves the demo predictions
    from staging labelled as such, and still exits 0 because the pipeline itself ran; --strict
    makes a failed gate exit 1. Re-running is idempotent: no duplicate rows, and a new model
    version only when the data or the config changed.

    Examples:

        qcli pipeline run --sample

        qcli pipeline run --input bars.csv --config desk.toml --strict --json
    """
    family = deprecated_alias("--model", "--family", model, family, Family.lgbm)
    with _progress(json_mode) as on_stage:
        result = run_pipeline(
            sample=sample,
            inputs=[str(p) for p in inputs or []],
            symbol=symbol,
            model_name=name,
            model_kind=family.value,
            online_store=online_store.value,
            redis_url=redis_url,
            strict=strict,
            on_stage=on_stage,
            debug=os.environ.get("QCLI_DEBUG") == "1",
            workspace=Workspace.from_env(tracking_uri=tracking_uri, config=config),
        )
    _finish(result, json_mode)


@contextmanager
def _progress(json_mode: bool) -> Iterator[Callable[[str], None]]:
    """A callback that shows each stage's title as it starts (a spinner on a terminal)."""
    status = Status("starting", console=stderr) if not json_mode and stderr.is_terminal else None
    if status:
        status.start()

    def on_stage(title: str) -> None:
        if status:
            status.update(f"[bold]{title}[/] ...")
        elif not json_mode:
            stderr.print(f"-> {title} ...")

    try:
        yield on_stage
    finally:
        if status:
            status.stop()


def _finish(result: PipelineResult, json_mode: bool) -> None:
    """Render; a crashed stage exits 3 (a crash, not a verdict), otherwise the gate rule."""
    out = result.to_dict()
    if result.crashed:
        emit(out, json_mode, lambda console: _render(console, out))
        raise typer.Exit(code=3)
    finish(result, json_mode, lambda console: _render(console, out))


def _render(console: Any, out: dict[str, Any]) -> None:
    table = Table(title=f"quantcli pipeline {out['run_id']}")
    for col in ("stage", "status", "gate", "time", "summary"):
        table.add_column(col, overflow="fold")
    colour = {"ok": "green", "failed": "red", "skipped": "dim", "pass": "green", "fail": "red"}
    for s in out["stages"]:
        gate = s["gate"] or ""
        table.add_row(
            s["title"],
            f"[{colour.get(s['status'], '')}]{s['status']}[/]",
            f"[{colour.get(gate, '')}]{gate}[/]" if gate else "",
            f"{s['seconds']:.1f}s",
            s["summary"],
        )
    console.print(table)
    failed = [s["title"] for s in out["stages"] if s["status"] == "failed"]
    if failed:
        console.print(f"[red]The pipeline stopped[/]: {escape(failed[0])} failed (see its row).")
    elif out["gates_passed"]:
        console.print("[green]All gates passed[/]: the model is in production.")
    else:
        console.print(
            f"[yellow]Gates did not all pass[/]: predictions came from alias "
            f"'{out['served_alias']}' (demo only). Exit 0 unless --strict."
        )
    console.print(f"Report: {out['report_html']}")
