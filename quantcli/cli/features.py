"""`qcli features ...`: Build, inspect and materialize feature sets.

`build`, `list`, `show`, `export`, `new` and `check` live here; `materialize` is added by
``features_online.py``. Command bodies parse options, call the library and render its result.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from quantcli.cli._choices import Engine, Executor, ExportFormat, OnlineStore
from quantcli.cli._common import JsonOpt, emit, note, progress
from quantcli.cli.data import split_symbols
from quantcli.errors import QuantCliError
from quantcli.features import build as feature_build
from quantcli.features.authoring import check_feature_set_file, list_feature_sets, new_feature_set
from quantcli.features.export import export_features
from quantcli.features.inspect import describe_feature_set, show_features
from quantcli.features.reference import kind_catalog
from quantcli.online.write import OnlineWriteError, check_target, write_latest
from quantcli.resources import ENV_FEATURE_DEFS

app = typer.Typer(help="Build, inspect and materialize feature sets.", no_args_is_help=True)


@app.callback()
def _defs(
    defs: Annotated[
        str | None,
        typer.Option(
            "--defs",
            metavar="DIR",
            help="A directory of user feature sets (<name>.toml), searched before "
            "$QCLI_HOME/feature_defs and the bundled sets; also QCLI_FEATURE_DEFS.",
        ),
    ] = None,
) -> None:
    """Build, inspect and materialize feature sets; write and check your own."""
    if defs:
        prior = os.environ.get(ENV_FEATURE_DEFS)
        os.environ[ENV_FEATURE_DEFS] = os.pathsep.join(p for p in (defs, prior) if p)


FeatureSetOpt = Annotated[
    str, typer.Option("--feature-set", help="Declaration under feature_defs/ (e.g. technical_v1).")
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


BuildSymbolsOpt = Annotated[
    str | None,
    typer.Option("--symbols", help="Comma-separated symbols (default: every symbol in bars)."),
]

BuildSinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Rewrite only rows on or after this date (YYYY-MM-DD, UTC)."),
]

FullOpt = Annotated[bool, typer.Option("--full", help="Delete and rewrite every symbol in scope.")]

ExecutorOpt = Annotated[Executor, typer.Option("--executor", help="Where shards are computed.")]

RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster address (with --executor ray)."),
]

EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="How features are computed: kernel = Numba kernels, bit-identical to TA-Lib, "
        "the fast default; polars = native Polars expressions, the readable reference, "
        "agrees with kernel to rtol 1e-9. Recorded in feature_builds; switching engine "
        "needs --full (a table never mixes the two engines' values).",
    ),
]

OnlineOpt = Annotated[
    bool,
    typer.Option(
        "--online",
        help="After the build commits, also write the latest row of every symbol in scope "
        "to the online store (the same values as the offline rows, bit for bit). If that "
        "write fails the offline table is already complete: the command exits 1 and a "
        "re-run repairs the online store.",
    ),
]

OnlineStoreOpt = Annotated[
    OnlineStore,
    typer.Option("--online-store", help="With --online: embedded sqlite or redis."),
]

RedisUrlOpt = Annotated[
    str | None,
    typer.Option("--redis-url", help="With --online-store redis: redis://HOST:PORT/DB."),
]


@app.command("build")
def build_cmd(
    feature_set: FeatureSetOpt = "technical_v1",
    symbols: BuildSymbolsOpt = None,
    since: BuildSinceOpt = None,
    full: FullOpt = False,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddressOpt = None,
    engine: EngineOpt = Engine.kernel,
    online: OnlineOpt = False,
    online_store: OnlineStoreOpt = OnlineStore.sqlite,
    redis_url: RedisUrlOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Compute a feature set from `bars` and write its table, in one transaction.

    The indicators are recursive: every value depends on the symbol's history from its first
    bar; the first bars (199 for technical_v1) are warm-up and dropped. By default the build is
    incremental: only rows after the last bar seen by the previous build are written, unless a
    symbol's earlier bars changed (then it is rewritten). The result equals a full rebuild.

    Streaming: each symbol's kernel state is stored with its rows, so an unchanged symbol is
    continued from that state over its new bars only (path "stream" in the JSON `paths`);
    revised or back-filled bars rebuild the symbol ("rewrite"). Both give the same bytes.
    --online then writes each symbol's latest row to the online store (exit 1 if that fails
    after the offline commit; a re-run repairs it).

    A symbol whose median bar spacing contradicts the set's declared frequency (hourly bars
    under a daily set, or the reverse) is a warning, on stderr and in the JSON `warnings`.

    The engine (kernel or polars) is recorded with the build. A table holds one engine's
    values: a build with the other engine must rewrite every symbol (--full, no --symbols),
    otherwise it exits 2 and changes nothing.

    Examples:

        qcli features build

        qcli features build --symbols SPX,IXIC --json

        qcli features build --since 2018-01-01

        qcli features build --full --executor ray

        qcli features build --full --engine polars

        qcli features build --online --online-store redis
    """
    if online:  # bad online options exit 2 before the build changes anything
        check_target(online_store.value, redis_url)
    with progress(json_mode) as bar:
        task = bar.add_task(f"building {feature_set}", total=None)
        result = feature_build.build_features(
            feature_set=feature_set,
            symbols=split_symbols(symbols),
            since=since,
            executor=executor.value,
            ray_address=ray_address,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            full=full,
            engine=engine.value,
        )
    for message in result.warnings:
        note(f"Warning: {escape(message)}", json_mode)
    if online:
        result = _write_online(result, online_store.value, redis_url)
    emit(result.to_dict(), json_mode, lambda con: con.print(_build_table(result)))


def _write_online(result: Any, online_store: str, redis_url: str | None) -> Any:
    """``result`` with what ``--online`` wrote; a failure of the online store itself, after the
    offline commit, is an :class:`OnlineWriteError` (exit 1) telling how to repair it."""
    try:
        written = write_latest(
            result.feature_set, result.symbols, online_store=online_store, redis_url=redis_url
        )
    except QuantCliError:
        raise
    except Exception as exc:  # the online store's own failure, after the offline commit
        raise OnlineWriteError(
            f"build {result.build_id} committed offline; the online write failed: "
            f"{type(exc).__name__}: {exc}",
            hint="re-run `qcli features build --online` to repair the online store",
        ) from None
    return dataclasses.replace(result, online=written.to_dict())


def _build_table(result: Any) -> Table:
    table = Table(title=f"Feature build {result.build_id}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key in (
        "feature_set", "table", "mode", "engine", "bars_read", "rows_computed", "rows_written",
        "rows_deleted", "warmup_rows_dropped", "input_sha256", "executor",
    ):  # fmt: skip
        table.add_row(key, str(getattr(result, key)))
    if result.previous_engine not in (None, result.engine):
        table.add_row("replaced engine", result.previous_engine)
    table.add_row("symbols", f"{len(result.symbols)}")
    table.add_row("non-finite values", str(result.quality["non_finite"]))
    table.add_row("seconds", str(result.timings_s.get("total")))
    return table


@app.command("list")
def list_cmd(
    feature_set: FeatureSetOpt = "technical_v1",
    all_sets: Annotated[
        bool, typer.Option("--all", help="List every visible feature set (user sets first).")
    ] = False,
    kinds: Annotated[
        bool, typer.Option("--kinds", help="List every feature kind with its params.")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """List the features of a feature set and the state of its table.

    With --all, every feature set quantcli can see (user directories first, then the bundled
    ones); with --kinds, every kind a declaration may use, its params and TA-Lib counterpart.

    Examples:

        qcli features list

        qcli features list --all

        qcli features --defs ./my_defs list --kinds --json
    """
    if all_sets or kinds:
        _list_catalog(all_sets, kinds, json_mode)
        return
    result = describe_feature_set(feature_set)

    def render(con) -> None:
        table = Table(
            title=f"{result['feature_set']} (version {result['version']}, "
            f"table {result['table']}, warm-up {result['warmup']} bars)"
        )
        for col in ("feature", "kind", "params", "lookback", "description"):
            table.add_column(col)
        for f in result["features"]:
            params = ", ".join(f"{k}={v}" for k, v in f["params"].items())
            table.add_row(f["name"], f["kind"], params, str(f["lookback"]), f["description"])
        con.print(table)
        labels = ", ".join(f"{lab['name']} (h={lab['horizon']})" for lab in result["labels"])
        con.print(f"labels: {labels}")
        st = result["table_status"]
        if st is None:
            con.print("table: not built yet (run `qcli features build`)")
        else:
            con.print(
                f"table: {st['rows']} rows, {st['symbols']} symbols, "
                f"{st['ts_min']} .. {st['ts_max']}"
            )
            if st["last_build"]:
                lb = st["last_build"]
                con.print(
                    f"last build: {lb['build_id']} at {lb['built_at']} ({lb['mode']}, "
                    f"{lb['engine']} engine, {lb['rows_written']} rows written)"
                )

    emit(result, json_mode, render)


@app.command("show")
def show_cmd(
    symbol: Annotated[str, typer.Argument(help="The symbol, e.g. SPX.")],
    last: Annotated[int, typer.Option("--last", help="How many of the latest rows.")] = 5,
    feature_set: FeatureSetOpt = "technical_v1",
    json_mode: JsonOpt = False,
) -> None:
    """Show the latest feature rows of one symbol (one column per date).

    Examples:

        qcli features show SPX

        qcli features show IXIC --last 10 --json
    """
    result = show_features(symbol, last=last, feature_set=feature_set)

    def render(con) -> None:
        table = Table(title=f"{symbol}: {result['table']} (last {len(result['rows'])} rows)")
        table.add_column("feature", style="bold")
        # intraday bars need their time; daily ones read better as dates
        daily = all(row["ts"].time() == datetime.time(0) for row in result["rows"])
        for row in result["rows"]:
            label = str(row["ts"].date()) if daily else row["ts"].strftime("%Y-%m-%d %H:%M:%S")
            table.add_column(label, justify="right")
        for col in result["columns"][1:]:
            table.add_row(col, *(_fmt(row[col]) for row in result["rows"]))
        con.print(table)

    note(f"{len(result['rows'])} rows of {symbol}", json_mode)
    emit(result, json_mode, render)


@app.command("export")
def export_cmd(
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="The file to write; an existing file is replaced.",
            show_default=False,
        ),
    ],
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            help="File format. Default: csv for a .csv output, else parquet.",
            show_default=False,
        ),
    ] = None,
    feature_set: FeatureSetOpt = "technical_v1",
    symbols: Annotated[
        str | None,
        typer.Option("--symbols", help="Comma-separated symbols (default: every stored symbol)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Keep rows at or after this date (YYYY-MM-DD, UTC)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Keep rows at or before this date (YYYY-MM-DD, UTC)."),
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Write a built feature table to a Parquet or CSV file, sorted by (symbol, ts).

    Columns: symbol, ts (UTC) and the features, as stored by `qcli features build`. The same
    store and options write the same bytes; a failed export leaves nothing under --output.
    pandas reads the result with pd.read_parquet, polars with pl.read_parquet.

    Examples:

        qcli features export --output features.parquet

        qcli features export -o spx.csv --symbols SPX --since 2018-01-01 --json
    """
    result = export_features(
        output,
        feature_set,
        fmt=None if fmt is None else fmt.value,
        symbols=split_symbols(symbols),
        since=since,
        until=until,
    )
    emit(result.to_dict(), json_mode, lambda c: c.print(escape(result.summary())))


def _list_catalog(all_sets: bool, kinds: bool, json_mode: bool) -> None:
    result: dict[str, Any] = {}
    if all_sets:
        result["feature_sets"] = list_feature_sets()
    if kinds:
        result["kinds"] = kind_catalog()

    def render(con) -> None:
        if all_sets:
            table = Table(title="Feature sets")
            for col in ("name", "origin", "version", "table", "frequency", "features", "path"):
                table.add_column(col)
            for row in result["feature_sets"]:
                if "error" in row:
                    table.add_row(row["name"], row["origin"], "", "", "", "", row["error"])
                    continue
                table.add_row(
                    *(
                        str(row[c])
                        for c in (
                            "name",
                            "origin",
                            "version",
                            "table",
                            "frequency",
                            "features",
                            "path",
                        )
                    )
                )
            con.print(table)
        if kinds:
            table = Table(title="Feature kinds")
            for col in ("kind", "reads", "params", "TA-Lib", "description"):
                table.add_column(col)
            for k in result["kinds"]:
                table.add_row(k["kind"], k["reads"], k["params"], k["talib"], k["doc"])
            con.print(table)

    emit(result, json_mode, render)


@app.command("new")
def new_cmd(
    name: Annotated[str, typer.Argument(help="<family>_v<version>, e.g. desk_fx_v1.")],
    source: Annotated[
        str | None,
        typer.Option(
            "--from", help="Start from this feature set's declaration (e.g. technical_v1)."
        ),
    ] = None,
    directory: Annotated[
        str | None,
        typer.Option(
            "--dir", help="Where to write (default: --defs, else $QCLI_HOME/feature_defs)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Write a starting feature-set file NAME.toml that passes `qcli features check`.

    Without --from the file declares a few features of the TA-Lib and transform kinds, a label
    and the bar frequency, with comments; edit it, then `qcli features check` it and
    `qcli features build --feature-set NAME`.

    Examples:

        qcli features new desk_v1

        qcli features new desk_v2 --from technical_v1

        qcli features --defs ./feature_defs new fx_hourly_v1 --json
    """
    result = new_feature_set(name, source=source, directory=directory, force=force)
    note(f"wrote {result.path} ({result.features} features, table {result.table})", json_mode)
    emit(result.to_dict(), json_mode, lambda con: con.print(result.path))


@app.command("check")
def check_cmd(
    path: Annotated[str, typer.Argument(help="The feature-set file (.toml) to check.")],
    json_mode: JsonOpt = False,
) -> None:
    """Check a feature-set file: kinds, params, names, references, frequency, labels.

    Exit 0 when it loads; exit 2 with one line naming the file, the line and the key otherwise.

    Examples:

        qcli features check ~/.qcli/feature_defs/desk_v1.toml

        qcli features check desk_v1.toml --json
    """
    result = check_feature_set_file(path)
    fs = result.declaration

    def render(con) -> None:
        con.print(
            f"{path}: ok -- {len(fs.features)} features, table {fs.table}, "
            f"frequency {fs.frequency} ({fs.periods_per_year:g} periods/year), "
            f"warm-up {fs.warmup} bars"
        )

    emit(result.to_dict(), json_mode, render)
