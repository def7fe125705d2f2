"""The stage runner of ``qcli pipeline run``: timing, status and one summary per stage.

A stage's ``status`` says whether it *ran* (``ok``, ``failed``, ``skipped``); a gate's verdict is
reported separately in ``gate`` (``pass``/``fail``/``None``), because a model that fails its
Sharpe gate is an honest result of a pipeline that worked.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quantcli.errors import QuantCliError


@dataclass
class StageResult:
    name: str
    title: str
    status: str = "pending"  # ok | failed | skipped
    gate: str | None = None  # pass | fail | None (no gate)
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "gate": self.gate,
            "summary": self.summary,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "details": self.details,
        }


@dataclass
class StageOutcome:
    """What a stage function returns: a one-line summary, details, and an optional gate verdict."""

    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    gate: str | None = None


class StageRunner:
    """Runs named stages in order; after a failed stage the remaining ones are skipped."""

    def __init__(self, on_start: Callable[[str], None] | None = None, debug: bool = False):
        self.results: list[StageResult] = []
        self.on_start = on_start
        self.debug = debug
        self.failed = False

    def run(self, name: str, title: str, fn: Callable[[], StageOutcome]) -> StageResult:
        res = StageResult(name=name, title=title)
        self.results.append(res)
        if self.failed:
            res.status = "skipped"
            res.summary = "skipped: an earlier stage failed"
            return res
        if self.on_start:
            self.on_start(title)
        t0 = time.perf_counter()
        try:
            out = fn()
        except QuantCliError as exc:
            res.status, res.error = "failed", exc.message
            res.summary = f"failed: {exc.message}"
            self.failed = True
            if self.debug:
                raise
        except Exception as exc:  # a crash in one stage is reported, with its traceback
            res.status = "failed"
            res.error = f"{type(exc).__name__}: {exc}"
            res.summary = f"crashed: {res.error}"
            res.details["traceback"] = traceback.format_exc(limit=8)
            self.failed = True
            if self.debug:
                raise
        else:
            res.status, res.summary, res.details, res.gate = (
                "ok",
                out.summary,
                out.details,
                out.gate,
            )
        finally:
            res.seconds = time.perf_counter() - t0
        return res
