"""Typed workflow results and the one gate rule the CLI and the library share.

Every workflow that can pass or fail (validate, promote, export, parity, drift, guard, shadow,
materialize, ...) returns a :class:`Result` subclass: a frozen dataclass with ``passed``,
``reasons`` (every failed criterion, in words), its own typed fields, :meth:`Result.to_dict`
(the ``--json`` object, keys as documented) and :meth:`Result.raise_if_failed`.

The CLI applies exactly this rule -- ``result.raise_if_failed()`` and exit code 1 on a failure --
so a Python caller and a shell script see the same verdict for the same call.

Results also answer ``result["key"]`` and ``result.get("key")`` from :meth:`Result.to_dict`, so
scripts written against the older dict results keep working; new code should use attributes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Self

from quantcli.errors import GateFailedError


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types: results, dataclasses, dates, paths, numpy scalars and arrays,
    sets and tuples; non-finite floats become ``None`` (JSON has no NaN)."""
    if isinstance(obj, Result):
        return jsonable(obj.to_dict())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Enum):
        return jsonable(obj.value)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return jsonable(obj.item())
    return str(obj)


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    """``obj`` as a JSON document (see :func:`jsonable`)."""
    return json.dumps(jsonable(obj), indent=indent)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Result:
    """The outcome of a workflow: ``passed``, the failed criteria in ``reasons``, typed fields.

    Subclasses add their own fields and may override :meth:`to_dict` to keep a documented JSON
    layout; ``failure_message`` is the one-line error the CLI prints when the result failed.
    """

    passed: bool
    reasons: tuple[str, ...] = ()

    failure_message: ClassVar[str] = "the check failed"

    def __post_init__(self) -> None:
        # a list passed by a caller is frozen too, so a result cannot change after it is judged
        if not isinstance(self.reasons, tuple):
            object.__setattr__(self, "reasons", tuple(self.reasons))

    @property
    def failed(self) -> bool:
        return not self.passed

    def to_dict(self) -> dict[str, Any]:
        """The result as the ``--json`` object: every field, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}

    def message(self) -> str:
        """The one-line failure message (first reason when the class names none better)."""
        return self.failure_message

    def failure_hint(self) -> str | None:
        """A second line naming what would help, printed as the error's ``Hint:`` (none here)."""
        return None

    def raise_if_failed(self) -> Self:
        """Return ``self`` if it passed, else raise :class:`~quantcli.errors.GateFailedError`
        (exit code 1) carrying ``reasons``, the JSON-able result and :meth:`failure_hint`."""
        if not self.passed:
            raise GateFailedError(
                self.message(),
                reasons=list(self.reasons),
                result=jsonable(self.to_dict()),
                hint=self.failure_hint(),
            )
        return self

    # read access of the older dict results, for scripts written against them
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def keys(self) -> Iterator[str]:
        return iter(self.to_dict())


__all__ = ["Result", "jsonable", "to_json"]
