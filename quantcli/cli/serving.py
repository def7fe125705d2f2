"""`qcli serve` and `qcli predict`: the prediction service and in-process predictions."""

from __future__ import annotations

from typing import Annotated

import typer

from quantcli.cli._choices import Alias
from quantcli.cli._common import JsonOpt, emit, note

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
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Serve predictions over HTTP (FastAPI under uvicorn) until Ctrl-C.

    POST /predict {"symbols": ["SPY", "QQQ"]} returns per symbol the prediction and its audit
    tags; GET /health; GET /metrics (Prometheus). Set QCLI_API_TOKEN to require
    "Authorization: Bearer TOKEN". Every prediction is appended to the audit ledger.

    Examples:

        qcli serve --model momentum --alias production --port 8000

        curl -s -X POST localhost:8000/predict -d '{"symbols": ["SPY"]}'
    """
    from quantcli.serving.http import serve
    from quantcli.serving.predict import load_predictor

    predictor = load_predictor(model, alias, tracking_uri=tracking_uri)
    tags = predictor.tags
    url = f"http://{host}:{port}"
    # --json: one object describing what is served, printed before the server blocks
    emit({"url": url, **predictor.describe()}, json_mode)
    note(f"serving {tags['model_name']} v{tags['model_version']} (@{alias}) on {url}", json_mode)
    serve(predictor, host=host, port=port)


def predict_cmd(
    symbols: Annotated[list[str], typer.Argument(help="Tickers to predict.")],
    model: ModelOpt = None,
    alias: AliasOpt = Alias.production,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Predict in-process (same path as the service) and record it in the audit ledger.

    Examples:

        qcli predict SPY QQQ

        qcli predict SPY --model momentum --alias staging --json
    """
    from quantcli.serving.predict import load_predictor

    predictor = load_predictor(model, alias, tracking_uri=tracking_uri)
    try:
        result = predictor.predict(symbols, source="cli")
    finally:
        predictor.close()
    emit(result, json_mode, lambda con: _render_predictions(con, result))


def _render_predictions(con, result: dict) -> None:
    from rich.table import Table

    first = result["predictions"][0]
    table = Table(
        title=f"{result['model_name']} v{first['model_version']} @{result['alias']} "
        f"(features {first['feature_version']})"
    )
    for col in ("symbol", "prediction", "feature_ts", "source", "latency ms"):
        table.add_column(col, justify="right" if col in ("prediction", "latency ms") else "left")
    for row in result["predictions"]:
        table.add_row(
            row["symbol"],
            f"{row['prediction']:+.6f}",
            row["feature_ts"] or "-",
            "online" if row["fallback"] is None else f"offline ({row['fallback']})",
            f"{row['inference_latency_ms']:.3f}",
        )
    con.print(table)
    con.print(f"request {result['request_id']} recorded in the audit ledger")


def register(app: typer.Typer) -> None:
    """Add the top-level serving commands to the root app."""
    app.command("serve")(serve_cmd)
    app.command("predict")(predict_cmd)
