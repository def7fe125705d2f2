"""What a service serves: the arms (production, canary candidate, shadow) and the kill switch.

A :class:`Deployment` is replaced whole on every change, so a request that read it keeps one
consistent view until it is answered; :func:`swap_records` are the audit records of a change.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ARMS = ("production", "candidate")


@dataclass(frozen=True)
class Arm:
    """One loaded, verified model version and the role it plays: ``production``, ``candidate``
    (a canary's share of the traffic) or ``shadow`` (scored off the hot path, never answered)."""

    role: str
    runtime: Any
    tags: dict[str, Any]
    feature_names: tuple[str, ...]

    @property
    def version(self) -> str | None:
        return self.tags.get("model_version")


@dataclass(frozen=True)
class Deployment:
    """What a service serves right now; replaced whole (one attribute store) on every swap, so a
    request that read it keeps a consistent view until it is answered."""

    production: Arm
    candidate: Arm | None = None
    share: float = 0.0
    shadow: Arm | None = None
    halted: str | None = None  # the reason, while the kill switch is on

    def arm_for(self, key: str) -> Arm:
        """The arm serving request ``key``: deterministic, ``candidate`` for a ``share`` of keys."""
        if self.candidate is None or self.share <= 0.0:
            return self.production
        return self.candidate if assignment_point(key) < self.share else self.production

    def describe(self) -> dict[str, Any]:
        def arm(a: Arm | None) -> dict[str, Any] | None:
            return None if a is None else {"version": a.version, **_short(a.tags)}

        return {
            "production": arm(self.production),
            "candidate": arm(self.candidate),
            "share": self.share,
            "shadow": arm(self.shadow),
            "halted": self.halted is not None,
            "halt_reason": self.halted,
        }


def _short(tags: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": tags.get("model_name"), "onnx_sha256": tags["onnx_model"]["sha256"]}


def assignment_point(key: str) -> float:
    """A request key's point in [0, 1): the first 8 bytes of its sha256 over 2**64.

    A key below the candidate's share is served by the candidate, so one key always gets the
    same arm at a given share, and raising the share only moves keys towards the candidate.
    """
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def swap_records(
    old: Deployment,
    new: Deployment,
    *,
    alias: str | None,
    reason: str,
    resume_reason: str | None = None,
) -> list[dict[str, Any]]:
    """The audit records of going from ``old`` to ``new``: ``swap`` per role whose version
    changed, ``share`` when only the canary share moved, ``halt``/``resume`` for the kill switch.

    A ``halt`` record carries the halt's reason, a ``resume`` one ``resume_reason`` (the
    operator's, from the registry) when given, else ``reason``.
    """
    records = []
    now = datetime.now(UTC).isoformat()
    for role in ("production", "candidate", "shadow"):
        before, after = getattr(old, role), getattr(new, role)
        if (before and before.version) != (after and after.version):
            records.append(
                {
                    "recorded_at": now,
                    "event": "swap",
                    "source": "service",
                    "alias": alias,
                    "model_name": (after or before).tags["model_name"],
                    "arm": role,
                    "from_version": before and before.version,
                    "to_version": after and after.version,
                    "reason": reason,
                    "pid": os.getpid(),
                }
            )
    if old.share != new.share and not any(r["arm"] == "candidate" for r in records):
        records.append(
            {
                "recorded_at": now,
                "event": "share",
                "source": "service",
                "alias": alias,
                "model_name": new.production.tags["model_name"],
                "arm": "candidate",
                "from_share": old.share,
                "to_share": new.share,
                "reason": reason,
                "pid": os.getpid(),
            }
        )
    if (old.halted is None) != (new.halted is None):
        records.append(
            {
                "recorded_at": now,
                "event": "halt" if new.halted else "resume",
                "source": "service",
                "alias": alias,
                "model_name": new.production.tags["model_name"],
                "reason": new.halted or resume_reason or reason,
                "pid": os.getpid(),
            }
        )
    return records


__all__ = ["ARMS", "Arm", "Deployment", "assignment_point", "swap_records"]
