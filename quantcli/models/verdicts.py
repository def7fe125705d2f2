"""The promotion gates: which verdicts a promotion requires, what each verdict judged, its
signature and whether it still holds.

A verdict records the sha256 of every artifact it judged, by *role* (the artifact path's first
folder: ``model``, ``onnx``, ... plus ``dataset``, the dataset manifest), and is signed with the
signing key. Adding, replacing or removing an artifact of a judged role afterwards makes it
``stale``; an edited verdict tag is ``invalid``. Neither counts as ``pass``.
"""

from __future__ import annotations

import json
import math
import re
from types import MappingProxyType
from typing import Any

from quantcli import config, integrity
from quantcli.errors import InputError, IntegrityError
from quantcli.models import tags as T
from quantcli.models.versions import ModelVersionInfo, json_or_none

#: The built-in gates every promotion requires: a config can add gates, never remove these.
GATE_FLOOR: tuple[str, ...] = T.GATES
#: The artifact roles each gate judges; a gate not listed judges every role ("*").
GATE_ROLES: dict[str, tuple[str, ...]] = {
    "backtest": ("model", "dataset"),
    "parity": ("model", "onnx"),
}
GATE_NAME_RE = re.compile(r"^[a-z_]{1,64}$")
#: The backtest thresholds no promotion goes below: the embedded ``[gates]`` defaults. A config
#: may judge more strictly; a verdict reached under looser thresholds does not pass. For each
#: of them a higher value is stricter (``max_drawdown`` is a negative fraction).
THRESHOLD_FLOOR = MappingProxyType({k: float(v) for k, v in config.DEFAULTS["gates"].items()})
#: The format of the signed registration record that carries the training backtest.
REGISTERED_FORMAT = "quantcli-registered/2"


def gate_policy(cfg: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """``{"floor", "config", "required"}``: the built-in gates, the config's list, their union.

    ``required`` is the floor followed by the gates the config adds, in config order.
    """
    section = (cfg or config.DEFAULTS).get("registry") or {}
    listed = section.get("required_verdicts", list(GATE_FLOOR))
    if not isinstance(listed, list | tuple):
        raise InputError(f"[registry] required_verdicts must be a list, got {listed!r}")
    gates = list(listed)
    bad = [g for g in gates if not isinstance(g, str) or not GATE_NAME_RE.match(g)]
    if bad:
        raise InputError(
            f"[registry] required_verdicts has invalid gate names {bad}",
            hint=f"known gates: {', '.join(T.GATES)}",
        )
    required = list(GATE_FLOOR) + [g for g in dict.fromkeys(gates) if g not in GATE_FLOOR]
    return {"floor": list(GATE_FLOOR), "config": gates, "required": required}


def required_verdicts(cfg: dict[str, Any] | None = None) -> list[str]:
    """The gates ``promote`` requires: the built-in floor plus what the config adds."""
    return gate_policy(cfg)["required"]


def with_floor(required: list[str] | None) -> list[str]:
    """``required`` raised to the floor (an API caller cannot lower it either)."""
    if required is None:
        return list(GATE_FLOOR)
    return gate_policy({"registry": {"required_verdicts": list(required)}})["required"]


def artifact_role(artifact_path: str) -> str:
    """The role of an artifact: the first folder of its path (``model``, ``onnx``, ...)."""
    return artifact_path.split("/", 1)[0]


def judged_snapshot(
    gate: str, artifacts: dict[str, str], dataset_sha256: str | None
) -> dict[str, Any]:
    """What a verdict of ``gate`` judges: ``{"roles", "artifacts": {path: sha256}, "dataset"}``.

    ``artifacts`` maps every artifact path of the version to its sha256; only the gate's roles
    are kept (:data:`GATE_ROLES`; every role for other gates).
    """
    roles = GATE_ROLES.get(gate)
    keep = {
        path: sha
        for path, sha in sorted(artifacts.items())
        if roles is None or artifact_role(path) in roles
    }
    judges_dataset = roles is None or "dataset" in roles
    return {
        "roles": sorted(roles) if roles is not None else ["*"],
        "artifacts": keep,
        "dataset": dataset_sha256 if judges_dataset else None,
    }


def verdict_statement(
    name: str, version: str, gate: str, verdict: str, reasons: str, at: str, judged: str
) -> bytes:
    """The bytes the signing key signs for a verdict (all fields as stored in the tags)."""
    body = {
        "at": at,
        "gate": gate,
        "judged": judged,
        "model": name,
        "reasons_sha256": integrity.sha256_bytes(reasons.encode("utf-8")),
        "verdict": verdict,
        "version": str(version),
    }
    return b"quantcli-verdict:v1:" + json.dumps(body, sort_keys=True).encode("utf-8")


def verdict_state(info: ModelVersionInfo, gate: str, keys: dict[str, Any]) -> dict[str, Any]:
    """``{"verdict", "status", "reasons"}`` of ``gate`` on ``info``.

    ``status``: ``pass`` (signed, and nothing it judged changed since), ``fail``, ``stale`` (a
    pass, but an artifact of a judged role was added, replaced or removed since, the dataset
    manifest changed, or the verdict predates content binding), ``invalid`` (the verdict tags
    were edited: the signature does not verify) or ``missing``.
    """
    tags = info.tags
    verdict = tags.get(T.verdict_tag(gate))
    if verdict is None:
        return {"verdict": None, "status": "missing", "reasons": []}
    judged_raw, sig = tags.get(T.judged_tag(gate)), tags.get(T.verdict_sig_tag(gate))
    if (judged_raw is None or sig is None) and verdict != T.PASS:
        return {"verdict": verdict, "status": verdict, "reasons": []}
    if judged_raw is None or sig is None:
        return {
            "verdict": verdict,
            "status": "stale",
            "reasons": [
                f"verdict '{gate}' records no hashes of what it judged (recorded before "
                "verdicts were bound to content): record it again"
            ],
        }
    statement = verdict_statement(
        info.name,
        info.version,
        gate,
        verdict,
        tags.get(T.reasons_tag(gate), ""),
        tags.get(T.verdict_at_tag(gate), ""),
        judged_raw,
    )
    try:
        integrity.verify_message(statement, sig, "signing", keys=keys, what=f"verdict '{gate}'")
        judged = json.loads(judged_raw)
        roles, then, dataset = judged["roles"], dict(judged["artifacts"]), judged["dataset"]
    except (IntegrityError, ValueError, KeyError, TypeError) as exc:
        why = exc.message if isinstance(exc, IntegrityError) else "unreadable judged hashes"
        return {
            "verdict": verdict,
            "status": "invalid",
            "reasons": [f"verdict '{gate}' is not the one its gate recorded ({why})"],
        }
    bounds = {"thresholds": judged["thresholds"]} if "thresholds" in judged else {}
    if verdict != T.PASS:  # a failed verdict fails whatever changed since
        return {"verdict": verdict, "status": verdict, "reasons": [], "judged": then, **bounds}
    if gate == "backtest":
        # a backtest pass counts only when it was read from the record signed at training
        if "run_id" not in judged:
            return {
                "verdict": verdict,
                "status": "stale",
                "reasons": [
                    "verdict 'backtest' was not taken from the signed training record "
                    "(recorded before the backtest was signed with the model): record it again"
                ],
            }
        if judged["run_id"] != info.run_id:
            return {
                "verdict": verdict,
                "status": "stale",
                "reasons": [
                    f"verdict 'backtest' judged run {judged['run_id']}, but the version's run "
                    f"is {info.run_id}"
                ],
            }
    now = {
        path: rec.get("sha256", "")
        for path, rec in info.artifacts.items()
        if roles == ["*"] or artifact_role(path) in roles
    }
    reasons = []
    for path in sorted(set(then) | set(now)):
        if path not in now:
            reasons.append(f"{path} was removed after the '{gate}' verdict")
        elif path not in then:
            reasons.append(f"{path} was added after the '{gate}' verdict judged its role")
        elif then[path] != now[path]:
            reasons.append(
                f"{path} was replaced after the '{gate}' verdict (judged sha256 "
                f"{then[path][:12]}..., now {now[path][:12]}...)"
            )
    if ("dataset" in roles or roles == ["*"]) and dataset != tags.get(T.DATASET_SHA256):
        reasons.append(f"the dataset manifest changed after the '{gate}' verdict")
    if reasons:
        return {"verdict": verdict, "status": "stale", "reasons": reasons}
    return {"verdict": verdict, "status": verdict, "reasons": [], "judged": then, **bounds}


def statuses(info: ModelVersionInfo) -> dict[str, str]:
    """``{gate: pass | fail | stale | invalid}`` of every recorded verdict."""
    return {g: st["status"] for g, st in info.verdict_states.items() if st["status"] != "missing"}


def threshold_shortfalls(thresholds: Any) -> list[str]:
    """Why ``thresholds`` (the ``[gates]`` a backtest was judged under) are looser than
    :data:`THRESHOLD_FLOOR`; empty when every one is at least as strict.

    ``None`` (no thresholds in the signed record) is a shortfall too: a pass that does not say
    what it passed cannot be compared with the floor. The trainer always records the ones it
    judged under; a caller registering its own run logs them as ``gate_*`` run parameters.
    """
    if thresholds is None:
        return [
            "the training backtest recorded no thresholds (no gate_* run parameters): a pass "
            "must name the gates it was judged under"
        ]
    if not isinstance(thresholds, dict):
        return ["the backtest thresholds recorded at training are unreadable"]
    out = []
    for key, floor in THRESHOLD_FLOOR.items():
        raw = thresholds.get(key)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value >= floor):
            out.append(
                f"the backtest was judged under {key} {raw!r}, looser than the floor {floor:g} "
                "(a config may raise the gates, never lower them)"
            )
    return out


def backtest_record(
    verdict: str, reasons: list[str], thresholds: Any, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The training backtest as the registration record signs it: verdict, reasons, the
    thresholds it was judged under and its scalar metrics (non-finite values as ``None``)."""
    clean = {}
    for key, value in sorted((metrics or {}).items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        clean[key] = float(value) if math.isfinite(value) else None
    return {
        "verdict": verdict if verdict in T.VERDICT_VALUES else None,
        "reasons": [str(r) for r in reasons],
        "thresholds": None
        if thresholds is None
        else {k: float(v) for k, v in sorted(dict(thresholds).items())},
        "metrics": clean,
    }


def registered_statement(name: str, version: str | int, snapshot_json: str) -> bytes:
    return f"quantcli-registered:v1:{name}:{version}:".encode() + snapshot_json.encode("utf-8")


def gate_reasons(info: ModelVersionInfo, required: list[str], states: dict[str, Any]) -> list[str]:
    """Why ``info`` may not be promoted under ``required`` (empty when every gate passes).

    A gate passes only when its verdict is ``pass``, signed, and nothing it judged changed;
    ``states`` are the verdict states of ``info`` (:func:`verdict_state` of every gate).
    """
    reasons: list[str] = []
    hints = {
        "backtest": f"run: qcli model validate {info.name} --version {info.version}",
        "parity": f"run: qcli model export {info.name} --version {info.version}",
        "scan": f"run: qcli model scan {info.name} --version {info.version}",
    }
    for gate in required:
        state = states.get(gate) or {"status": "missing", "reasons": []}
        status = state["status"]
        if status == "missing":
            reasons.append(f"verdict '{gate}' not recorded ({hints.get(gate, 'record it first')})")
        elif status == "fail":
            failed = info.tags.get(T.reasons_tag(gate))
            detail = "; ".join(json_or_none(failed) or []) or "no reasons recorded"
            reasons.append(f"verdict '{gate}' is fail: {detail}")
        elif status != T.PASS:
            again = hints.get(gate, "record it again")
            reasons.append(
                f"verdict '{gate}' is {status}: " + "; ".join(state["reasons"]) + f" ({again})"
            )
    return reasons


__all__ = [
    "GATE_FLOOR",
    "GATE_NAME_RE",
    "GATE_ROLES",
    "REGISTERED_FORMAT",
    "THRESHOLD_FLOOR",
    "artifact_role",
    "backtest_record",
    "gate_policy",
    "gate_reasons",
    "judged_snapshot",
    "registered_statement",
    "required_verdicts",
    "statuses",
    "threshold_shortfalls",
    "verdict_state",
    "verdict_statement",
    "with_floor",
]
