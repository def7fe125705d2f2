"""`qcli serve` and `qcli predict`: the prediction service and in-process predictions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from quantcli.cli._choices import Alias
from quantcli.cli._common import JsonOpt, emit, note
from quantcli.errors import InputError
from quantcli.monitoring.alerts import Alert, AlertConfig, AlertSink
from quantcli.serving.follow import AlertFn, ServingConfig
from quantcli.serving.http import serve
from quantcli.serving.predict import PredictResponse, predict_once
from quantcli.serving.service import open_service
from quantcli.workspace import Workspace

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar="QCLI_MODEL",
        help="Registered model name (default: $QCLI_MODEL, or the only registered model).",
    ),
]
AliasOpt = Annotated[Alias, typer.Option("--alias", help="Registry alias to serve.")]
TrackingOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: local store).")
]


def serve_cmd(
    model: ModelOpt = None,
    alias: AliasOpt = Alias.production,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    shadow_alias: Annotated[
        str | None,
        typer.Option(
            "--shadow-alias",
            help="Also score every request with this alias's version (e.g. staging), off the "
            "hot path; both predictions go to the audit ledger. Default: the shadow stored by "
            "`qcli model rollout --mode shadow`, if any.",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            "--poll-interval",
            help="Seconds between registry reads (default: [serving] poll_interval_s, 2).",
        ),
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-body-bytes",
            help="Largest /predict body; larger ones get 413 (default: [serving] "
            "max_body_bytes, 1000000).",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", help="TOML overriding [serving] and [alerts]."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Serve predictions over HTTP (FastAPI under uvicorn) until Ctrl-C; follow the registry.

    POST /predict {"symbols": ["SPY", "QQQ"]} (Content-Type: application/json) returns per
    symbol the prediction, the arm that served it and its audit tags; GET /health; GET /metrics
    (Prometheus); POST /admin/reload re-reads the registry now. Set QCLI_API_TOKEN to require
    "Authorization: Bearer TOKEN" (QCLI_ADMIN_TOKEN for /admin/reload). Every prediction is
    appended to the audit ledger.

    The service follows the registry without a restart: every --poll-interval seconds it
    re-reads the alias, the canary (`qcli model rollout`) and the kill switch (`qcli model
    halt`), loads and verifies a new version in the background and swaps it in; a version that
    fails to verify is never served (alert + audit record).

    Examples:

        qcli serve --model momentum --alias production --port 8000

        qcli serve --model momentum --shadow-alias staging --poll-interval 1

        curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{"symbols": ["SPY"]}'
    """
    if not 0 < port < 65536:  # before any start-up work or output
        raise InputError(f"--port must be 1..65535, got --port {port}")
    ws = Workspace.from_env(tracking_uri=tracking_uri, config=config)
    settings = _serving_config(ws, poll_interval, max_body_bytes)
    service = open_service(
        model,
        alias,
        workspace=ws,
        shadow_alias=shadow_alias,
        config=settings,
        alert=_alert_sender(ws),
    )
    if service.broken is not None:
        note(f"every /predict answers 503: {service.broken}", json_mode)
    predictor = service.predictor
    tags = predictor.tags
    url = f"http://{host}:{port}"
    # --json: one object describing what is served, printed before the server blocks
    emit({"url": url, **predictor.describe()}, json_mode)
    note(f"serving {tags['model_name']} v{tags['model_version']} (@{alias}) on {url}", json_mode)
    serve(
        predictor,
        host=host,
        port=port,
        follower=service.follower,
        max_body_bytes=settings.max_body_bytes,
    )


def _serving_config(
    ws: Workspace, poll_interval: float | None, max_body_bytes: int | None
) -> ServingConfig:
    """The ``[serving]`` section with the command's options over it; errors name the option."""
    overrides = {
        k: v
        for k, v in (("poll_interval_s", poll_interval), ("max_body_bytes", max_body_bytes))
        if v is not None
    }
    try:
        return ServingConfig(**{**ws.section("serving"), **overrides})
    except InputError as exc:  # name the option the user typed
        raise InputError(
            exc.message.replace("[serving] poll_interval_s", "--poll-interval").replace(
                "[serving] max_body_bytes", "--max-body-bytes"
            )
        ) from None


def _alert_sender(ws: Workspace) -> AlertFn:
    """``alert(severity, title, details)`` delivering through the ``[alerts]`` routes, off the
    request path (the follower calls it; serving itself does not know the monitoring layer)."""
    sink = AlertSink(AlertConfig.from_config(ws.config))

    def send(severity: str, title: str, details: dict) -> None:
        sink.send_in_background(Alert(severity, title, source="qcli serve", details=details))

    return send


def predict_cmd(
    symbols: Annotated[list[str], typer.Argument(help="Tickers to predict.")],
    model: ModelOpt = None,
    alias: AliasOpt = Alias.production,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Predict in-process (same path as the service) and record it in the audit ledger.

    A halted model (`qcli model halt`) is refused here too: exit 1 with the reason.

    Examples:

        qcli predict SPY QQQ

        qcli predict SPY --model momentum --alias staging --json
    """
    ws = Workspace.from_env(tracking_uri=tracking_uri)
    result = predict_once(symbols, model, alias, workspace=ws, source="cli")
    emit(result, json_mode, lambda con: _render_predictions(con, result))


def _render_predictions(con, result: PredictResponse) -> None:
    first = result.predictions[0]
    table = Table(
        title=f"{result.model_name} v{first['model_version']} @{result.alias} "
        f"(features {first['feature_version']})"
    )
    for col in ("symbol", "prediction", "feature_ts", "source", "latency ms"):
        table.add_column(col, justify="right" if col in ("prediction", "latency ms") else "left")
    for row in result.predictions:
        table.add_row(
            row["symbol"],
            f"{row['prediction']:+.6f}",
            row["feature_ts"] or "-",
            "online" if row["fallback"] is None else f"offline ({row['fallback']})",
            f"{row['inference_latency_ms']:.3f}",
        )
    con.print(table)
    con.print(f"request {result.request_id} recorded in the audit ledger")


def register(app: typer.Typer) -> None:
    """Add the top-level serving commands to the root app."""
    app.command("serve")(serve_cmd)
    app.command("predict")(predict_cmd)
