"""`qcli data ...`: ingest, validate and summarise OHLCV bars in the offline store.

Command bodies call :mod:`quantcli.data`; the renderers below only format its results. Every
user string they show (file names, symbols, details quoting a cell) is escaped: rich would
otherwise read ``[red]x[/red]`` in a file as markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from quantcli.cli._choices import ExportFormat
from quantcli.cli._common import JsonOpt, emit, note, progress
from quantcli.data.defaults import DEFAULT_OUTLIER_Z
from quantcli.data.export import export_bars
from quantcli.data.ingest import ingest_files, ingest_sample, validate_files
from quantcli.data.spacing import parse_interval
from quantcli.data.summary import bars_summary
from quantcli.data.window import TimestampWindow
from quantcli.errors import InputError
from quantcli.features.bar_spacing import declared_interval
from quantcli.workspace import Workspace

app = typer.Typer(
    help="Ingest, validate and summarise OHLCV bars in the offline store.", no_args_is_help=True
)

PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="CSV (.csv, .csv.gz) or Parquet files of bars.", show_default=False),
]
SymbolOpt = Annotated[
    str | None,
    typer.Option("--symbol", "-s", help="Symbol of every row, for files without a symbol column."),
]
IntervalOpt = Annotated[
    str | None,
    typer.Option(
        "--interval",
        help="Expected bar spacing, e.g. 1d, 1h, 5m, 30s, 1w; gaps against it are reported as "
        "warnings (weekends and single missing weekdays are not gaps). Default: the median "
        "spacing of the input.",
        show_default=False,
    ),
]
EarliestOpt = Annotated[
    str | None,
    typer.Option(
        "--earliest",
        help="Earliest plausible bar time (YYYY-MM-DD or ISO datetime, UTC); an older bar "
        "refuses the input. Default: [data] earliest of --config, else 1900-01-01.",
        show_default=False,
    ),
]
LatestOpt = Annotated[
    str | None,
    typer.Option(
        "--latest",
        help="Latest plausible bar time; a later bar refuses the input. Default: now plus "
        "[data] future_days of --config (1 day).",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file overriding the embedded defaults ([data] section)."),
]
OutlierOpt = Annotated[
    float,
    typer.Option(
        "--outlier-z",
        help="Robust z-score of a one-bar log return beyond which a bar is reported as an "
        "outlier (a warning).",
    ),
]


def _window(ws: Workspace, earliest: str | None, latest: str | None) -> TimestampWindow:
    return TimestampWindow.from_config(ws.section("data"), earliest, latest)


def _quality_table(quality: dict[str, Any]) -> Table:
    table = Table(title=f"Data quality: {quality['rows']} bars, {quality['symbols']} symbols")
    table.add_column("check")
    table.add_column("severity")
    table.add_column("count", justify="right")
    table.add_column("first example")
    if not quality["warnings"]:
        table.add_row("all checks", "ok", "0", "")
    for w in quality["warnings"]:
        ex = w["examples"][0] if w["examples"] else {}
        where = f"{ex.get('source', '')} {ex.get('location', '')}: {ex.get('detail', '')}"
        table.add_row(
            w["check"], f"[yellow]{w['severity']}[/]", str(w["count"]), escape(where.strip())
        )
    return table


def _ingest_table(result: dict[str, Any]) -> Table:
    table = Table(title="Ingest", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key in ("ingest_id", "rows_in", "rows_inserted", "rows_updated", "rows_unchanged"):
        table.add_row(key, str(result[key]))
    table.add_row(
        "symbols",
        escape(", ".join(result["symbols"][:10]) + (" ..." * (len(result["symbols"]) > 10))),
    )
    table.add_row("range (UTC)", f"{result['ts_min']} .. {result['ts_max']}")
    table.add_row("store", escape(result["store"]))
    return table


def _run_with_progress(json_mode: bool, fn):
    """Run ``fn(on_step)`` under a progress display.

    Step descriptions quote user data (file names) that may contain ``[...]``: escaped so rich
    shows them as written. Error messages are escaped once, by the root error handler.
    """
    with progress(json_mode) as bar:
        task = bar.add_task("starting", total=None)
        return fn(lambda step: bar.update(task, description=escape(step)))


@app.command()
def ingest(
    paths: PathsArg = None,
    symbol: SymbolOpt = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Ingest the bundled real sample (SPX and IXIC).")
    ] = False,
    outlier_z: OutlierOpt = DEFAULT_OUTLIER_Z,
    interval: IntervalOpt = None,
    earliest: EarliestOpt = None,
    latest: LatestOpt = None,
    feature_set: Annotated[
        str | None,
        typer.Option(
            "--feature-set",
            help="Check the bars against this feature set's declared frequency: it is the "
            "default --interval, and a symbol whose bar spacing contradicts it is a warning.",
        ),
    ] = None,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Validate bars and upsert them into the offline store, all or nothing.

    Column names are case-insensitive; the time column may be date, timestamp, datetime or ts;
    dates without a time zone are read as UTC. Any error (null, price <= 0, OHLC inconsistent,
    negative volume, duplicate (symbol, ts) or column name, unparseable value, a symbol that is
    not 1-32 letters, digits or . - _ ^ = /, a time outside the plausibility window
    1900-01-01 .. now + 1 day, a leap second) refuses the whole input with exit code 2 and a
    message naming the file, line and column; warnings (zero volume, unsorted, naive
    timestamps, outliers, gaps against --interval) are printed and recorded with the ingest.
    Re-ingesting the same bars changes nothing (upsert on (symbol, ts)).

    Examples:

        qcli data ingest --sample

        qcli data ingest prices/*.csv --interval 1d

        qcli data ingest aapl.parquet --symbol AAPL --outlier-z 8 --json

        qcli data ingest old_ticks.csv --earliest 1885-01-01 --interval 1h

        qcli data ingest fx_hourly.parquet --feature-set fx_hourly_v1
    """
    if sample and paths:
        raise InputError("give either PATH... or --sample, not both")
    if not sample and not paths:
        raise InputError("nothing to ingest", hint="pass CSV/Parquet paths, or --sample")
    ws = Workspace.from_env(config=config)
    declared, declared_by = declared_interval(feature_set, interval, ws.section("features"))
    gaps_against = interval or (declared if feature_set is not None else None)
    checks: dict[str, Any] = {
        "outlier_z": outlier_z,
        "window": _window(ws, earliest, latest),
        "interval": parse_interval(gaps_against) if gaps_against is not None else None,
        "workspace": ws,
        "declared_interval": declared,
        "declared_by": declared_by,
    }
    if sample:
        result = _run_with_progress(
            json_mode, lambda on_step: ingest_sample(on_step=on_step, **checks)
        )
    else:
        result = _run_with_progress(
            json_mode, lambda on_step: ingest_files(paths, symbol, on_step=on_step, **checks)
        )
    for message in result.warnings:
        note(f"Warning: {escape(message)}", json_mode)
    out = result.to_dict()
    emit(
        out,
        json_mode,
        lambda c: (c.print(_quality_table(out["quality"])), c.print(_ingest_table(out))),
    )


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="CSV or Parquet files of bars.")],
    symbol: SymbolOpt = None,
    outlier_z: OutlierOpt = DEFAULT_OUTLIER_Z,
    interval: IntervalOpt = None,
    earliest: EarliestOpt = None,
    latest: LatestOpt = None,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Run the data-quality checks on files without writing anything.

    Exit code 0 if the files would be accepted (warnings are listed), 2 with the first error's
    file, line and column if they would be refused. The checks and options are those of
    `qcli data ingest`.

    Examples:

        qcli data validate prices.csv

        qcli data validate aapl.parquet --symbol AAPL --interval 5m --json
    """
    step = parse_interval(interval) if interval is not None else None
    window = _window(Workspace.from_env(config=config), earliest, latest)
    result = _run_with_progress(
        json_mode,
        lambda on_step: validate_files(
            paths, symbol, outlier_z=outlier_z, on_step=on_step, window=window, interval=step
        ),
    )
    out = result.to_dict()
    emit(out, json_mode, lambda c: c.print(_quality_table(out["quality"])))


@app.command()
def summary(
    recent: Annotated[
        int, typer.Option("--recent", min=0, help="How many recent ingests to list.")
    ] = 5,
    json_mode: JsonOpt = False,
) -> None:
    """Show what the offline store holds: bars per symbol, date ranges, recent ingests.

    Examples:

        qcli data summary

        qcli data summary --json
    """
    out = bars_summary(recent_ingests=recent)
    if not json_mode and out["symbols"] == 0:
        note("the bars table is empty: run `qcli data ingest PATH` (or --sample)")
    emit(out, json_mode, lambda c: _render_summary(c, out))


def _render_summary(console, out: dict[str, Any]) -> None:
    table = Table(
        title=f"bars: {out['rows']} rows, {out['symbols']} symbols ({escape(out['store'])})"
    )
    for col, justify in (
        ("symbol", "left"),
        ("rows", "right"),
        ("first", "left"),
        ("last", "left"),
    ):
        table.add_column(col, justify=justify)
    for r in out["by_symbol"]:
        table.add_row(
            escape(r["symbol"]),  # bars stored before the symbol rule may hold anything
            str(r["rows"]),
            f"{r['first_ts']:%Y-%m-%d %H:%M}",
            f"{r['last_ts']:%Y-%m-%d %H:%M}",
        )
    console.print(table)
    if out["ingests"]:
        ing = Table(title="recent ingests (newest first)")
        for col in ("ingest_id", "at (UTC)", "in", "new", "changed", "same", "warnings"):
            ing.add_column(col)
        for i in out["ingests"]:
            ing.add_row(
                i["ingest_id"],
                f"{i['ingested_at']:%Y-%m-%d %H:%M:%S}",
                str(i["rows_in"]),
                str(i["rows_inserted"]),
                str(i["rows_updated"]),
                str(i["rows_unchanged"]),
                ", ".join(f"{k} x{v}" for k, v in i["warnings"].items()) or "-",
            )
        console.print(ing)


ExportOutputOpt = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        help="The file to write; an existing file is replaced.",
        show_default=False,
    ),
]
ExportFormatOpt = Annotated[
    ExportFormat | None,
    typer.Option(
        "--format",
        help="File format. Default: csv for a .csv output, else parquet.",
        show_default=False,
    ),
]
ExportSymbolsOpt = Annotated[
    str | None,
    typer.Option("--symbols", help="Comma-separated symbols (default: every stored symbol)."),
]
ExportSinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Keep rows at or after this date (YYYY-MM-DD, UTC)."),
]
ExportUntilOpt = Annotated[
    str | None,
    typer.Option("--until", help="Keep rows at or before this date (YYYY-MM-DD, UTC)."),
]


def split_symbols(symbols: str | None) -> list[str] | None:
    """``--symbols A,B`` as a list (``None`` when not given)."""
    if symbols is None:
        return None
    return [s.strip() for s in symbols.split(",") if s.strip()]


@app.command("export")
def export_cmd(
    output: ExportOutputOpt,
    fmt: ExportFormatOpt = None,
    symbols: ExportSymbolsOpt = None,
    since: ExportSinceOpt = None,
    until: ExportUntilOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Write the stored bars to a Parquet or CSV file, sorted by (symbol, ts), ts in UTC.

    The same store and options write the same bytes. The file is written under a temporary
    name and renamed, so a failed export leaves nothing under --output.

    Examples:

        qcli data export --output bars.parquet

        qcli data export -o spx.csv --symbols SPX --since 2018-01-01 --json
    """
    result = export_bars(
        output,
        fmt=None if fmt is None else fmt.value,
        symbols=split_symbols(symbols),
        since=since,
        until=until,
    )
    emit(result.to_dict(), json_mode, lambda c: c.print(escape(result.summary())))
