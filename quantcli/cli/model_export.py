"""`qcli model export` and `qcli model scan`: the ONNX graph, its parity gate and the model scan.

Both record a verdict on the model version (``parity``, ``scan``) that ``qcli model promote``
requires. onnx, onnxruntime, lightgbm and mlflow load inside the library calls that need them.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.table import Table

from quantcli.cli._choices import Int8Method, Quantize
from quantcli.cli._common import JsonOpt, emit, note, progress, stderr
from quantcli.cli.model import ConfigOpt, NameArg, TrackingOpt, VersionOpt, app
from quantcli.models.registry import ModelRegistry
from quantcli.serving.onnx_export import RegisteredExport, export_registered
from quantcli.serving.scan import RegisteredScan, scan_registered
from quantcli.workspace import Workspace

SampleOpt = Annotated[
    int,
    typer.Option(
        "--sample-rows", help="Training-feature rows for the parity check (and the scan probe)."
    ),
]


@app.command()
def export(
    name: NameArg,
    version: VersionOpt = None,
    quantize: Annotated[
        Quantize | None,
        typer.Option(
            "--quantize",
            help="Also write an INT8 graph. A pure tree model has no MatMul/Gemm "
            "operator: it is reported not quantizable and only FP32 is written.",
        ),
    ] = None,
    int8_method: Annotated[
        Int8Method,
        typer.Option(
            "--int8-method",
            help="dynamic (activations quantized per call), static (calibrated on training "
            "features) or weight-only (INT8 weights, FP32 activations).",
        ),
    ] = Int8Method.dynamic,
    sample_rows: SampleOpt = 2000,
    no_benchmark: Annotated[
        bool, typer.Option("--no-benchmark", help="Skip the latency report.")
    ] = False,
    config: ConfigOpt = None,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Export a registered version to ONNX, check parity, benchmark, and record the verdict.

    FP32 parity loss must stay under parity.fp32_max_loss_pct (0.1 %), INT8 under
    parity.int8_max_loss_pct (1 %); loss = max(relative error %, flipped long/short
    decisions %). Parity runs on training-feature rows from the offline store.
    Exit 1 when a gate fails (verdict 'parity' = fail). Default version: the one behind the
    @staging alias (the candidate `model train` registered), else the latest; which one is
    said on stderr and in --json ("version_source": "--version", "@staging" or "latest").

    Examples:

        qcli model export momentum                # the @staging version
        qcli model export momentum --version 3

        qcli model export momentum_ens --quantize int8 --int8-method weight-only --json
    """
    ws = Workspace.from_env(tracking_uri=tracking_uri, config=config)
    version, source = _default_version(name, version, ws)
    note(f"exporting {name} v{version} ({_SOURCE_TEXT[source]})", json_mode)
    with progress(json_mode) as bar:
        bar.add_task("exporting, checking parity, benchmarking", total=None)
        result = export_registered(
            name,
            version,
            quantize=None if quantize is None else quantize.value,
            int8_method=int8_method.value,
            sample_rows=sample_rows,
            workspace=ws,
            benchmark=not no_benchmark,
        )
    result = dataclasses.replace(result, version_source=source)
    if result.failed and not json_mode:  # show what failed before the one-line error
        stderr.print(result.report, highlight=False, markup=False)
    result.raise_if_failed()
    emit(result, json_mode, lambda console: _render_export(console, result))


_SOURCE_TEXT = {
    "--version": "as given by --version",
    "@staging": "the version behind the @staging alias",
    "latest": "the latest version: the model has no @staging alias",
}


def _default_version(name: str, version: str | None, ws: Workspace) -> tuple[str, str]:
    """The version to export or scan and how it was chosen (see ``candidate_version``)."""
    return ModelRegistry(ws.tracking_uri).candidate_version(name, version)


def _render_export(console: Any, result: RegisteredExport) -> None:
    console.print(result.report, highlight=False, markup=False)
    console.print(
        f"{result.name} v{result.version}: verdict parity = {result.verdict}; "
        f"serving graph: {result.recommended}",
        highlight=False,
    )


@app.command()
def scan(
    name: NameArg,
    version: VersionOpt = None,
    sample_rows: SampleOpt = 2000,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Security-scan every artifact of a registered version and record the 'scan' verdict.

    Checks: ONNX or LightGBM text only (a pickle is refused by its magic bytes), sha256 and
    signature verify, operators and domains on an allow-list, no external data outside the
    artifact directory, bounded input/output shapes and sizes, finite predictions on extreme
    valid inputs. Exit 1 with the findings when any check fails. Default version: the one
    behind @staging, else the latest (as `model export`; "version_source" in --json).

    Examples:

        qcli model scan momentum                  # the @staging version
        qcli model scan momentum --version 3

        qcli model scan momentum --json
    """
    ws = Workspace.from_env(tracking_uri=tracking_uri)
    version, source = _default_version(name, version, ws)
    note(f"scanning {name} v{version} ({_SOURCE_TEXT[source]})", json_mode)
    with progress(json_mode) as bar:
        bar.add_task("scanning artifacts", total=None)
        result = scan_registered(name, version, workspace=ws, sample_rows=sample_rows)
    result = dataclasses.replace(result, version_source=source).raise_if_failed()
    emit(result, json_mode, lambda console: _render_scan(console, result))
    note(f"probe bounds: {result.probe_bounds}", json_mode)


def _render_scan(console: Any, result: RegisteredScan) -> None:
    table = Table(title=f"scan of {result.name} v{result.version}")
    for col in ("file", "format", "checks", "verdict"):
        table.add_column(col)
    for f in result.files:
        checks = ", ".join(c.name for c in f.checks)
        table.add_row(f.path, f.format, checks, "PASS" if f.passed else "FAIL")
    console.print(table)
    console.print(f"verdict scan = {result.verdict}", highlight=False)


__all__ = ["app"]
