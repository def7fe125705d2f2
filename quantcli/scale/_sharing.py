"""Task members several tasks share, sent to a Ray cluster once instead of once per task.

A CPCV map sends the same ``X`` and ``y`` with every split: :func:`share` puts such members aside
(the executor stores them in the object store once) and leaves a :class:`Shared` placeholder in
each task; :func:`restore` swaps the values back on the worker, so the task function sees the
payload the caller built.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

# A top-level task member shared (by identity) by several tasks is put in the object store once
# when its pickled size is at least this many bytes; smaller ones are cheaper to send inline.
SHARE_MIN_BYTES = 64 * 1024


class Shared:
    """Placeholder for the ``slot``-th shared object of a map (see :func:`share`)."""

    __slots__ = ("slot",)

    def __init__(self, slot: int) -> None:
        self.slot = slot

    def __reduce__(self):
        return (Shared, (self.slot,))


def _is_dataclass_payload(task: Any) -> bool:
    # Only dataclasses whose every field goes through __init__ can be rebuilt with replace().
    return (
        dataclasses.is_dataclass(task)
        and not isinstance(task, type)
        and all(f.init for f in dataclasses.fields(task))
    )


def _members(task: Any) -> list[Any]:
    if _is_dataclass_payload(task):
        return [getattr(task, f.name) for f in dataclasses.fields(task)]
    if isinstance(task, tuple | list):
        return list(task)
    if isinstance(task, dict):
        return list(task.values())
    return []


def _replace(task: Any, fn: Callable[[Any], Any]) -> Any:
    if _is_dataclass_payload(task):
        return dataclasses.replace(
            task, **{f.name: fn(getattr(task, f.name)) for f in dataclasses.fields(task)}
        )
    if isinstance(task, tuple) and hasattr(task, "_fields"):  # namedtuple
        return type(task)(*(fn(v) for v in task))
    if isinstance(task, tuple | list):
        return type(task)(fn(v) for v in task)
    if isinstance(task, dict):
        return {k: fn(v) for k, v in task.items()}
    return task


def restore(task: Any, shared: tuple[Any, ...]) -> Any:
    return _replace(task, lambda v: shared[v.slot] if isinstance(v, Shared) else v)


def share(tasks: list[Any], min_bytes: int) -> tuple[list[Any], list[Any]]:
    """Split out top-level task members that several tasks share by identity.

    Returns the tasks with such members replaced by ``Shared(slot)`` and the list of shared
    objects (slot order). Only tuples, lists, namedtuples, dicts and dataclasses (such as the
    CPCV ``SplitTask`` carrying the same ``X`` and ``y``) are inspected, one level deep; a
    member counts as shared when the *same object* (``is``) appears in at least two tasks and it
    is large (pickles to at least ``min_bytes``), so small scalars stay inline.
    """
    if len(tasks) < 2:
        return tasks, []
    seen: dict[int, int] = {}
    objs: dict[int, Any] = {}
    for task in tasks:
        for m in _members(task):
            if m is None or isinstance(m, bool | int | float | str | bytes):
                continue
            seen[id(m)] = seen.get(id(m), 0) + 1
            objs[id(m)] = m
    candidates = [k for k, c in seen.items() if c >= 2]
    if not candidates:
        return tasks, []
    slots: dict[int, int] = {}
    shared: list[Any] = []
    for key in candidates:
        obj = objs[key]
        size = _size_bytes(obj)
        if size is None:  # unpicklable here: leave it to Ray's own serializer
            continue
        if size >= min_bytes:
            slots[key] = len(shared)
            shared.append(obj)
    if not shared:
        return tasks, []
    try:
        rewritten = [
            _replace(t, lambda v: Shared(slots[id(v)]) if id(v) in slots else v) for t in tasks
        ]
    except Exception:  # a payload that validates its fields (__post_init__): send it whole
        return tasks, []
    return rewritten, shared


def _size_bytes(obj: Any) -> int | None:
    """Serialized size of ``obj`` in bytes (buffer size for arrays/frames, no copy made)."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, pl.DataFrame):
        return int(obj.estimated_size())
    try:
        return len(pickle.dumps(obj, protocol=5))
    except Exception:
        return None
