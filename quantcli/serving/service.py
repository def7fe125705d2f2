"""A prediction service's start-up: the predictor on the audit ledger and the registry follower.

:func:`open_service` is what ``qcli serve`` runs before it binds the port: the model to serve, the
ledger (a broken one still starts the service, which then answers 503 saying why), the verified
runtime, and one registry read so the kill switch, canary and shadow apply from the first
request. :func:`quantcli.serving.http.serve` then runs the HTTP app over the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantcli.errors import InputError
from quantcli.models.deployment import read_state
from quantcli.models.registry import ModelRegistry
from quantcli.serving.follow import AlertFn, RegistryFollower, ServingConfig
from quantcli.serving.predict import (
    Predictor,
    default_model_name,
    load_predictor,
    open_service_ledger,
)
from quantcli.serving.registered import resolve_workspace
from quantcli.workspace import Workspace


@dataclass
class Service:
    """A started service: what it serves, how it follows the registry, and why it refuses
    every request (``broken``: the audit ledger's fault, else ``None``)."""

    predictor: Predictor
    follower: RegistryFollower
    broken: str | None = None


def open_service(
    model: str | None = None,
    alias: str = "production",
    *,
    workspace: Workspace | None = None,
    shadow_alias: str | None = None,
    config: ServingConfig | None = None,
    alert: AlertFn | None = None,
) -> Service:
    """Load ``model@alias`` (default: the only registered model) for serving and sync once.

    ``config`` is the ``[serving]`` section (poll interval, shadow queue); ``alert`` is called
    for versions that fail to load (see :class:`~quantcli.serving.follow.RegistryFollower`).
    ``shadow_alias`` must be an alias of the model (InputError naming ``--shadow-alias``
    otherwise), checked before anything is loaded.
    """
    ws = resolve_workspace(workspace)
    config = config or ServingConfig.from_config(ws.config)
    name = model or default_model_name(ws)
    if shadow_alias is not None:
        check_shadow_alias(ws, name, shadow_alias)
    ledger, broken = open_service_ledger(ws)
    predictor = load_predictor(
        name, alias, workspace=ws, ledger=ledger, shadow_queue=config.shadow_queue
    )
    if broken is not None:  # serve 503 with the reason rather than not start
        predictor.unavailable = broken
    follower = RegistryFollower(
        predictor,
        name,
        alias=alias,
        shadow_alias=shadow_alias,
        workspace=ws,
        interval_s=config.poll_interval_s,
        alert=alert,
    )
    follower.sync("startup")  # halt, canary and shadow apply from the first request
    return Service(predictor, follower, broken)


def check_shadow_alias(workspace: Workspace, name: str, shadow_alias: str) -> None:
    """InputError naming ``--shadow-alias`` unless model ``name`` has that alias now.

    A service asked to shadow an alias that does not exist would otherwise shadow nothing and
    say nothing; an alias removed later only pauses the shadow.
    """
    aliases = read_state(ModelRegistry(workspace), name).aliases
    if shadow_alias not in aliases:
        known = ", ".join(sorted(aliases)) or "none"
        raise InputError(
            f"--shadow-alias {shadow_alias!r}: model '{name}' has no alias '{shadow_alias}' "
            f"(its aliases: {known})",
            hint=f"set it first (e.g. qcli model train --name {name} sets staging), "
            "or leave --shadow-alias out",
        )


__all__ = ["Service", "check_shadow_alias", "open_service"]
