"""The base of the online workflows' results: records that always pass."""

from __future__ import annotations

import dataclasses
from typing import Any

from quantcli.results import Result

_VERDICT = frozenset({"passed", "reasons"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordResult(Result):
    """A result that reports what was done and has no verdict: it passes unless it raised.

    ``to_dict`` omits ``passed`` and ``reasons``, so the JSON keeps the documented keys.
    """

    passed: bool = True

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.fields(self)
        return {f.name: getattr(self, f.name) for f in fields if f.name not in _VERDICT}


__all__ = ["RecordResult"]
