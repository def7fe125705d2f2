"""`qcli features materialize`: generate the Feast objects and fill the online store.

Added onto the `features` sub-app (one owner per file). `quantcli.online` loads its modules on
first use, so `qcli --help` loads neither the feature engine nor Feast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from quantcli import online
from quantcli.cli._choices import Executor, OnlineStore, deprecated_alias
from quantcli.cli._common import JsonOpt, emit, note
from quantcli.cli.features import app


@app.command("materialize")
def materialize_cmd(
    feature_set: Annotated[
        str, typer.Option("--feature-set", help="Declaration under feature_defs/.")
    ] = "technical_v1",
    online_store: Annotated[
        OnlineStore, typer.Option("--online-store", help="Online store: embedded sqlite or redis.")
    ] = OnlineStore.sqlite,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="QCLI_REDIS_URL",
            help="redis://HOST:PORT/DB for --online-store redis.",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Re-materialize from the first row (not incremental).")
    ] = False,
    executor: Annotated[
        Executor,
        typer.Option("--executor", help="Feast batch engine: local, or ray (Feast's ray.engine)."),
    ] = Executor.local,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="With --executor ray: auto or ray://HOST:PORT."),
    ] = None,
    engine: Annotated[
        Executor | None,
        typer.Option("--engine", hidden=True, help="Deprecated spelling of --executor."),
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Generate the Feast entity and feature view from feature_defs/ and materialize.

    The offline feature table is exported to Parquet under $QCLI_HOME/feast/ (Feast's DuckDB
    offline store reads it), the generated objects are applied, and the latest row of every
    symbol is written to the online store. Later runs are incremental (from the last
    watermark) unless --full, a different online store or a changed declaration.

    Examples:

        qcli features materialize

        qcli features materialize --online-store redis --redis-url redis://127.0.0.1:6379/0

        qcli features materialize --full --json

        qcli features materialize --executor ray --ray-address ray://raycluster-head-svc:10001
    """
    executor = deprecated_alias("--engine", "--executor", engine, executor, Executor.local)
    note(f"materializing {feature_set} into the {online_store.value} online store ...", json_mode)
    result = online.materialize(
        feature_set,
        online_store=online_store.value,
        redis_url=redis_url,
        engine=executor.value,
        full=full,
        ray_address=ray_address,
    )

    def render(con) -> None:
        mode = "incremental" if result.incremental else "full"
        con.print(
            f"[bold]{result.feature_view}[/]: {result.symbols} symbols x "
            f"{result.features} features -> {result.online_store} ({mode}, "
            f"{result.start} .. {result.end}, TTL {result.ttl_days} d) "
            f"in {result.seconds:.2f} s"
        )

    emit(result, json_mode, render)


__all__ = ["app"]
