"""`qcli model ...`: train, validate, export, scan, promote and roll back models.

Each command parses its options, makes one call into :mod:`quantcli.models` (trainer,
lifecycle, listing, deployment) and renders the result; a failed gate exits 1 through
``result.raise_if_failed()``. mlflow, lightgbm and sklearn load inside those calls, so
``qcli --help`` imports none of them.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from quantcli.cli._choices import Executor, Family, RolloutMode, deprecated_alias
from quantcli.cli._common import JsonOpt, emit, finish, note, progress, stdout
from quantcli.errors import InputError
from quantcli.models import deployment, listing
from quantcli.models.lifecycle import promote_version, rollback_version, validate_version
from quantcli.models.mlflow_env import quiet_mlflow
from quantcli.models.registry import ModelRegistry
from quantcli.models.trainer import train_from_store
from quantcli.models.verdicts import gate_policy, required_verdicts
from quantcli.workspace import Workspace

app = typer.Typer(
    help="Train, validate, export, scan, promote and roll back models (MLflow registry).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Registered model name, e.g. momentum_lgbm.")]
VersionOpt = Annotated[
    str | None, typer.Option("--version", "-v", help="Model version (default: see command).")
]
TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///$QCLI_HOME/mlflow.db).",
    ),
]
ConfigOpt = Annotated[
    str | None, typer.Option("--config", help="TOML file overriding the embedded defaults.")
]


def _workspace(tracking_uri: str | None, config: str | None = None) -> Workspace:
    return Workspace.from_env(tracking_uri=tracking_uri, config=config)


def _registry(tracking_uri: str | None, config: str | None = None):
    return ModelRegistry(_workspace(tracking_uri, config))


def _required(config_path: str | None) -> list[str]:
    return required_verdicts(_workspace(None, config_path).config)


def _kv_table(title: str, rows: list[tuple[str, Any]]):
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in rows:
        table.add_row(key, "" if value is None else str(value))
    return table


# the metrics the train table shows (all of them are in --json and in the MLflow run)
_KEY_METRICS = ("sharpe", "psr", "dsr", "max_drawdown", "annual_return", "ic_mean", "n_splits")


def _fmt(value: Any, key: str = "") -> str:
    if key.startswith("n_") and isinstance(value, float) and value.is_integer():
        return str(int(value))  # counts come back from the engine as floats
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@app.command()
def train(
    name: Annotated[str, typer.Option("--name", help="Register the model under this name.")],
    family: Annotated[Family, typer.Option("--family", help="Model family to train.")] = (
        Family.lgbm
    ),
    feature_set: Annotated[str, typer.Option("--feature-set")] = "technical_v1",
    label: Annotated[str, typer.Option("--label", help="Label to predict.")] = "fwd_return_5d",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed (default: [lightgbm] seed of the config).")
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment.")] = (
        "quantcli"
    ),
    executor: Annotated[
        Executor,
        typer.Option(
            "--executor",
            help="Run the CPCV fits locally (a thread per core, QCLI_FIT_THREADS) or on Ray.",
        ),
    ] = Executor.local,
    tracking_uri: TrackingOpt = None,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
    model: Annotated[
        Family | None,
        typer.Option("--model", hidden=True, help="Deprecated spelling of --family."),
    ] = None,
) -> None:
    """Train on the stored features with CPCV, log the run to MLflow, register a version.

    The new version gets alias [bold]staging[/]. The CPCV backtest verdict is logged on the run;
    `qcli model validate` copies it onto the version before `promote`. The backtest tries the
    configured model and a few variations ([train] grid = "small", so PBO is computed) and
    registers the one with the best median path net Sharpe; grid = "none" tries one (PBO n/a).

    Examples:

        qcli model train --name momentum --family lgbm

        qcli model train --name momentum --family ensemble --config prod.toml --json
    """
    family = deprecated_alias("--model", "--family", model, family, Family.lgbm)
    quiet_mlflow()
    ws = _workspace(tracking_uri, config)
    with progress(json_mode) as bar:
        task = bar.add_task("CPCV splits", total=None)
        result = train_from_store(
            name,
            model=family.value,
            feature_set=feature_set,
            label=label,
            cfg=ws.config,
            seed=seed,
            experiment_name=experiment,
            executor=executor.value,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            workspace=ws,
        )
    out = result.to_dict()

    def render(console) -> None:
        rows = [
            ("model", f"{name} v{result.version} ({result.model_kind})"),
            ("aliases", ", ".join(result.aliases)),
            ("run", result.run_id),
            ("dataset sha256", result.dataset["sha256"]),
            ("rows / symbols", f"{result.dataset['rows']} / {len(result.dataset['symbols'])}"),
            ("time range", f"{result.dataset['start']} .. {result.dataset['end']}"),
        ]
        shown = [k for k in _KEY_METRICS if k in result.backtest_metrics]
        rows += [(k, _fmt(result.backtest_metrics[k], k)) for k in shown]
        rows.append(("backtest verdict", out["backtest_verdict"]))
        console.print(_kv_table("qcli model train", rows))
        for reason in result.reasons:
            console.print(f"  - {reason}")
        console.print(f"next: qcli model validate {name} --version {result.version}")

    # a failed backtest verdict is recorded, not an error: promotion is what it gates
    emit(out, json_mode, render)


@app.command()
def validate(
    name: NameArg,
    version: VersionOpt = None,
    tracking_uri: TrackingOpt = None,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Check a version's gates: every verdict pass and fresh, or exit 1 saying why.

    The model files are verified (sha256 + signature) first. The backtest verdict comes from the
    training run, bound to the model files and dataset registered with it; parity and scan are
    the verdicts `qcli model export` and `qcli model scan` recorded. A verdict whose judged
    artifacts were added, replaced or removed since shows [bold]stale[/] with the reason; an
    edited verdict shows [bold]invalid[/]. Default version: the staging one.

    Examples:

        qcli model validate momentum

        qcli model validate momentum --version 3 --json
    """
    reg = _registry(tracking_uri, config)
    result = validate_version(reg, name, version, required=required_verdicts(reg.workspace.config))
    finish(result, json_mode, lambda c: _render_verdicts(result.to_dict()))


def _render_verdicts(result: dict[str, Any]) -> None:
    table = Table(title=f"{result['name']} v{result['version']}: gate verdicts")
    table.add_column("gate")
    table.add_column("required")
    table.add_column("verdict")
    table.add_column("why")
    states = result.get("verdict_states") or {}
    gates = sorted(set(result["verdicts"]) | set(result["required_verdicts"]))
    for gate in gates:
        verdict = result["verdicts"].get(gate, "not recorded")
        style = "green" if verdict == "pass" else "red"
        required = "yes" if gate in result["required_verdicts"] else "no"
        why = "; ".join((states.get(gate) or {}).get("reasons") or [])
        table.add_row(gate, required, f"[{style}]{verdict}[/]", escape(why))
    stdout.print(table)


@app.command()
def promote(
    name: NameArg,
    version: VersionOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Governance override of failed gates (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    tracking_uri: TrackingOpt = None,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Move alias [bold]production[/] to a version whose recorded verdicts all pass.

    Default version: the staging one. Required verdicts: backtest, parity and scan always (a
    floor), plus any gate `[registry] required_verdicts` of the config adds; each must be pass
    and fresh (nothing it judged changed since). Every artifact is verified first. A refusal
    exits 1 with the reasons and changes nothing; --force --reason overrides the gates (never
    integrity) and is recorded as an override with the reason, your OS user and the policy.
    The previous production version is tagged archived and kept for rollback. Every promotion
    is recorded (who, when, why) in version tags and in `registry_events`.

    Examples:

        qcli model promote momentum

        qcli model promote momentum --version 3 --force --reason "risk committee RISK-123"
    """
    reg = _registry(tracking_uri, config)
    requested = gate_policy(reg.workspace.config)["config"]
    result = promote_version(reg, name, version, force=force, reason=reason, required=requested)

    def render(console) -> None:
        if not result.promoted:
            console.print(result.note or "nothing changed")
            return
        kind = "[yellow]OVERRIDE[/]" if result.forced else "[green]promoted[/]"
        console.print(
            f"{kind} {name} v{result.version} -> production "
            f"(previous: {result.previous_version or 'none'}; by {result.event['actor']})"
        )

    if result.passed:  # a refusal: the error handler prints the reasons (and the JSON)
        emit(result.to_dict(), json_mode, render)
    result.raise_if_failed()


@app.command()
def rollback(
    name: NameArg,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Move alias [bold]production[/] back to the previous production version, in one step.

    Repeated rollbacks walk the production history. Recorded (who, when, why) in version tags
    and in `registry_events`.

    Examples:

        qcli model rollback momentum --reason "live Sharpe below floor"
    """
    result = rollback_version(_registry(tracking_uri), name, reason=reason)
    emit(
        result.to_dict(),
        json_mode,
        lambda c: c.print(
            f"rolled back {name}: production v{result.from_version} -> "
            f"v{result.to_version} (history left: {result.history or 'none'})"
        ),
    )


@app.command("list")
def list_versions(
    name: Annotated[
        str | None,
        typer.Argument(help="Registered model name; without it, every model and its aliases."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Show a model's versions: aliases, status, verdicts, dataset hash, feature set version.

    Without a name, list every registered model of the store with its aliases and latest
    version.

    Examples:

        qcli model list

        qcli model list momentum --json
    """
    reg = _registry(tracking_uri)
    if name is None:
        models = listing.list_models(reg)
        emit(models.to_dict(), json_mode, lambda c: _render_models(models))
        return
    result = listing.list_versions(reg, name)
    versions = result.versions

    def render(console) -> None:
        table = Table(title=f"{name}: versions")
        cols = ("version", "aliases", "status", "override", "kind", "verdicts", "dataset")
        for col in (*cols, "features"):
            table.add_column(col)
        for v in versions:
            d = v.to_dict()
            states = d["verdict_states"]
            verdicts = (
                " ".join(
                    f"{g}={st['status']}" for g, st in states.items() if st["status"] != "missing"
                )
                or "-"
            )
            detail = d["override_detail"] or {}
            forced = (
                f"forced by {detail.get('os_user', '?')}: {detail.get('reason', '')}"
                if d["override"]
                else "-"
            )
            table.add_row(
                d["version"],
                ",".join(d["aliases"]) or "-",
                d["status"] or "-",
                escape(forced),
                d["model_kind"] or "-",
                verdicts,
                (d["dataset_sha256"] or "-")[:12],
                f"{d['feature_set'] or '-'} v{d['feature_set_version'] or '-'}",
            )
        console.print(table)
        note(f"production history (oldest first): {result.production_history or 'none'}")

    emit(result.to_dict(), json_mode, render)


# -- deployment: canary, shadow, kill switch (quantcli.models.deployment) -------------------------
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded).")]


@app.command()
def rollout(
    name: NameArg,
    version: VersionOpt = None,
    share: Annotated[
        float | None,
        typer.Option("--share", help="Candidate's traffic share: 0.1, 0.5, 1.0; 0 aborts."),
    ] = None,
    mode: Annotated[
        RolloutMode,
        typer.Option(
            "--mode",
            help="canary: the candidate answers --share of the requests; shadow: it scores "
            "every request off the hot path and answers none.",
        ),
    ] = RolloutMode.canary,
    promote_: Annotated[
        bool,
        typer.Option("--promote", help="Promote the canary at share 1.0 (gated) and end it."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Governance override of failed gates (needs --reason)."),
    ] = False,
    reason: ReasonOpt = None,
    tracking_uri: TrackingOpt = None,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Roll a candidate version out to every running service (canary / blue-green, shadow).

    The candidate and its share are stored in the registry, so every replica serves the same
    split (a request key always gets the same arm). Steps: --share 0.1 -> 0.5 -> 1.0, then
    --promote (the gated promote; exit 1 if a gate refuses); --share 0 aborts.

    Examples:

        qcli model rollout momentum --version 4 --mode shadow

        qcli model rollout momentum --version 4 --share 0.1

        qcli model rollout momentum --promote --reason "canary clean for 24 h"

        qcli model rollout momentum --share 0 --reason "canary error rate"
    """
    reg = _registry(tracking_uri)
    if promote_:
        if share is not None or version is not None:
            raise InputError("--promote takes no --version or --share (it promotes the canary)")
        result = deployment.promote_rollout(reg, name, reason=reason, required=_required(config))
        message = f"promoted canary v{result.candidate} of {name} to production"
    else:
        if share is None and mode == "canary":
            raise InputError("--share is required for a canary (0.1, 0.5, 1.0; 0 aborts)")
        if version is None and ((share or 0) > 0 or mode == "shadow"):
            raise InputError("--version is required (the candidate to roll out)")
        result = deployment.rollout(
            reg,
            name,
            version or "0",
            share or 0.0,
            mode=mode.value,
            reason=reason,
            force=force,
            required=_required(config),
        )
        message = (
            f"aborted the rollout of v{result.candidate} of {name}"
            if result.aborted
            else f"{name} v{result.version}: {result.mode} at share {result.share:g}"
        )
    emit(
        result.to_dict(),
        json_mode,
        lambda c: c.print(message + "; services follow at their next poll"),
    )


@app.command()
def halt(
    name: NameArg,
    reason: ReasonOpt = None,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Kill switch: every running service of NAME answers 503 with the reason until resumed.

    A registry event; each refused request is audited and /health shows "halted".

    Examples:

        qcli model halt momentum --reason "bad prices from the vendor since 14:02"
    """
    result = deployment.halt(_registry(tracking_uri), name, reason=reason)
    emit(
        result.to_dict(),
        json_mode,
        lambda c: c.print(f"[bold red]halted[/] {name}: {result.reason}"),
    )


@app.command()
def resume(
    name: NameArg,
    reason: ReasonOpt = None,
    tracking_uri: TrackingOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Lift the kill switch of NAME: services answer predictions again at their next poll.

    Examples:

        qcli model resume momentum --reason "vendor prices fixed, replayed and checked"
    """
    result = deployment.resume(_registry(tracking_uri), name, reason=reason)
    emit(
        result.to_dict(), json_mode, lambda c: c.print(f"[green]resumed[/] {name}: {result.reason}")
    )


def _render_models(models: listing.ModelListing) -> None:
    """Every registered model with its aliases (``qcli model list`` without a name)."""
    table = Table(title=f"registered models ({models.tracking_uri})")
    for col in ("name", "aliases", "latest", "versions"):
        table.add_column(col)
    for m in models.models:
        aliases = " ".join(f"{a}=v{v}" for a, v in m["aliases"].items()) or "-"
        table.add_row(m["name"], aliases, m["latest_version"] or "-", str(m["versions"]))
    stdout.print(table)
    if not models.models:
        note("no registered model yet: qcli model train --name NAME")
