"""Local and Ray executors behind one ``map`` interface (see :mod:`quantcli.scale`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from quantcli._optional import import_optional
from quantcli.errors import InputError

ENV_RAY_ADDRESS = "QCLI_RAY_ADDRESS"


class Executor(Protocol):
    name: str

    def map(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        *,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """``[fn(t) for t in tasks]``, in task order; ``on_done(i)`` after each finished task.

        The first task that raises fails the whole map with that exception.
        """
        ...


class LocalExecutor:
    """Runs tasks one after another in this process."""

    name = "local"

    def map(self, fn, tasks, *, on_done=None):
        out = []
        for i, task in enumerate(tasks):
            out.append(fn(task))
            if on_done is not None:
                on_done(i)
        return out


class RayExecutor:
    """Runs each task as a Ray task; results come back in task order.

    ``address``: ``None`` starts (or joins) a local cluster; ``"auto"`` joins a running cluster;
    ``"ray://HOST:PORT"`` connects through Ray Client. ``num_cpus`` applies to a local cluster only.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.ray = import_optional("ray", purpose="--executor ray")
        self.address = address or os.environ.get(ENV_RAY_ADDRESS) or None
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
            self.ray.init(**kwargs)

    def map(self, fn, tasks, *, on_done=None):
        ray = self.ray
        remote = ray.remote(max_retries=0)(fn)
        refs = [remote.remote(task) for task in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = index[ref]
                    results[i] = ray.get(ref)  # re-raises the task's exception
                    if on_done is not None:
                        on_done(i)
        except Exception as exc:
            for ref in pending:
                ray.cancel(ref, force=True)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        return results


def get_executor(name: str = "local", address: str | None = None) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``)."""
    if name == "local":
        if address:
            raise InputError("--ray-address only applies with --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address)
    raise InputError(f"unknown --executor '{name}'", hint="use --executor local or --executor ray")
