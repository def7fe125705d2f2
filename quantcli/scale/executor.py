"""Local and Ray executors behind one ``map`` interface (see :mod:`quantcli.scale`).

Contract shared by both executors (tests in ``tests/scale`` hold them to it):

* ``map(fn, tasks)`` returns ``[fn(t) for t in tasks]`` **in task order**, whatever order the
  tasks finished in, so a caller's output has the same bytes on either executor.
* A failing task fails the whole map with the task's own exception (same type, same message, so
  a :class:`~quantcli.errors.QuantCliError` keeps its exit code). When several tasks fail, the
  one reported is the **lowest task index**, exactly what the local loop would have raised. The
  exception carries ``task_index`` and a note ``task i of n on the <name> executor``.
* ``on_done(i)`` is called once per finished task (for progress bars).

The Ray executor adds what a cluster needs and a loop does not: large objects shared by every
task (the same ``X`` matrix in each CPCV split) are put in the object store **once** instead of
being pickled into every task; small tasks are chunked (about four chunks per cluster CPU) so the
per-task scheduling cost (about a millisecond) does not dominate; a lost worker, node or cluster
becomes a one-line :class:`ClusterError`; and joining an existing cluster checks that its workers
run the same quantcli, Python, Polars and NumPy versions as the driver (different versions could
give different numbers).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, Self

import numpy as np
import polars as pl

from quantcli import __version__
from quantcli._optional import import_optional
from quantcli.config import env_int
from quantcli.errors import InputError, QuantCliError
from quantcli.scale._sharing import SHARE_MIN_BYTES, restore, share

ENV_RAY_ADDRESS = "QCLI_RAY_ADDRESS"

# Chunks per cluster CPU when chunking automatically: enough to balance uneven tasks, few enough
# that Ray's per-task overhead stays negligible (the multiprocessing.Pool heuristic).
CHUNKS_PER_CPU = 4

_HOST_PORT = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class ClusterError(QuantCliError, RuntimeError):
    """The Ray cluster cannot be reached, lost a worker or node, or runs other versions (exit 2).

    It is a resource problem, not a bug in the task: the message names the address or the task
    and the hint says what to check.
    """

    exit_code = 2


#: A task function: one task in, one result out. Ray runs it on workers, so it must be a top-level
#: function of an installed module (picklable by reference).
TaskFn = Callable[[Any], Any]
#: Called with a task's index once that task has finished (progress bars).
OnDone = Callable[[int], None]


class Executor(Protocol):
    name: str

    def map(self, fn: TaskFn, tasks: Sequence[Any], *, on_done: OnDone | None = None) -> list[Any]:
        """``[fn(t) for t in tasks]``, in task order; ``on_done(i)`` after each finished task.

        The first task (lowest index) that raises fails the whole map with that exception.
        """
        ...


def _tag_failure(exc: BaseException, index: int, n: int, executor: str) -> BaseException:
    """Record which task failed on the exception itself (attribute + traceback note)."""
    with contextlib.suppress(AttributeError):  # exceptions with __slots__ take no attribute
        exc.task_index = index  # type: ignore[attr-defined]
    note = f"task {index} of {n} on the {executor} executor"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    return exc


class _ClosedOnExit:
    """``with executor:`` calls ``close()`` on the way out (both executors are context managers)."""

    def close(self) -> None:
        """Release what the executor holds (nothing, unless a subclass says otherwise)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(_ClosedOnExit):
    """Runs tasks in this process: one after another (the reference every executor must match),
    or on ``workers`` threads for tasks that release the GIL (LightGBM fits, Numba kernels).

    With threads the contract is unchanged: results in task order, the lowest failing index
    raised (every earlier task has finished by then), ``on_done`` from the calling thread, in
    task order. Independent deterministic tasks give the same bytes either way.
    """

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers

    def map(self, fn: TaskFn, tasks: Sequence[Any], *, on_done: OnDone | None = None) -> list[Any]:
        """``[fn(t) for t in tasks]``; see :class:`Executor`."""
        tasks = list(tasks)
        if self.workers > 1 and len(tasks) > 1:
            return self._map_threads(fn, tasks, on_done)
        out = []
        for i, task in enumerate(tasks):
            try:
                out.append(fn(task))
            except Exception as exc:
                raise _tag_failure(exc, i, len(tasks), self.name) from None
            if on_done is not None:
                on_done(i)
        return out

    def _map_threads(self, fn: TaskFn, tasks: list[Any], on_done: OnDone | None) -> list[Any]:
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(tasks)))
        futures = [pool.submit(fn, task) for task in tasks]
        out = []
        try:
            # in task order: the first failure met is the lowest failing index
            for i, future in enumerate(futures):
                try:
                    out.append(future.result())
                except Exception as exc:
                    raise _tag_failure(exc, i, len(tasks), self.name) from None
                if on_done is not None:
                    on_done(i)
        finally:
            # a failure or Ctrl-C drops the queued tasks; only the running ones finish
            pool.shutdown(wait=True, cancel_futures=True)
        return out


def fit_threads() -> int:
    """Threads for independent model fits: ``QCLI_FIT_THREADS`` or the CPUs this process may use.

    Each fit is single-threaded (LightGBM ``n_jobs=1``), so the fits of a CPCV backtest fill the
    cores without oversubscribing them, and the results do not depend on the count.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return env_int("QCLI_FIT_THREADS", max(1, cpus), lo=1, hi=1024)


def resolve_ray_address(address: str | None) -> str | None:
    """The Ray address to use: ``address``, else ``$QCLI_RAY_ADDRESS``, else ``None``.

    ``None`` means "start a local cluster on this machine". Accepted forms: ``auto`` (join the
    cluster started on this machine by ``ray start``), ``local``, ``HOST:PORT`` (the GCS address
    of a cluster this machine is a node of) and ``ray://HOST:PORT`` (Ray Client, e.g. the
    ``<cluster>-head-svc:10001`` service of a KubeRay cluster).

    Raises
    ------
    InputError
        The address has none of these forms; the message names the option or variable.
    """
    source = "--ray-address"
    if not address:
        address = os.environ.get(ENV_RAY_ADDRESS) or None
        source = f"${ENV_RAY_ADDRESS}"
    if address is None:
        return None
    address = address.strip()
    if address in ("auto", "local") or _HOST_PORT.match(address):
        return address
    raise InputError(
        f"{source} '{address}' is not a Ray address",
        hint="use auto, ray://HOST:PORT (Ray Client, e.g. a KubeRay head service on port 10001) "
        "or HOST:PORT",
    )


def _run_chunk(fn: Callable[[Any], Any], chunk: list[tuple[int, Any]], *shared: Any) -> list:
    """Ray task body: run ``fn`` on each ``(index, task)`` of a chunk, in order.

    ``shared`` are the object-store values Ray resolved for this call; ``Shared`` placeholders in
    the tasks are swapped back for them so ``fn`` sees exactly the payload the caller built.
    """
    out = []
    for index, task in chunk:
        if shared:
            task = restore(task, shared)
        try:
            out.append(fn(task))
        except Exception as exc:
            exc.task_index = index  # type: ignore[attr-defined]  # read back on the driver
            raise
    return out


def _versions() -> dict[str, str]:
    """Versions that change numbers if the driver and the workers disagree on them."""
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "quantcli": __version__,
        "polars": pl.__version__,
        "numpy": np.__version__,
    }


class RayExecutor(_ClosedOnExit):
    """Runs tasks as Ray tasks; results come back in task order.

    Parameters
    ----------
    address : str or None
        ``None`` (and no ``$QCLI_RAY_ADDRESS``) starts a local cluster for this process;
        ``"auto"`` joins a running cluster on this machine; ``"ray://HOST:PORT"`` connects
        through Ray Client (KubeRay exposes it on the head service, port 10001). If Ray is
        already initialized in this process (a test session, a notebook), that connection is
        reused and ``address`` is ignored.
    num_cpus : int or None
        CPUs of a local cluster started here (default: all of this machine's). Ignored when
        joining a cluster.
    chunksize : int or None
        Tasks per Ray task. ``None`` chooses ``ceil(n / (4 * cluster CPUs))``; ``1`` sends each
        task on its own.
    check_versions : bool or None
        Check that workers run the driver's quantcli/Python/Polars/NumPy versions. ``None``
        checks when joining an existing cluster (a local cluster started here shares this
        interpreter, so there is nothing to check).

    Raises
    ------
    MissingDependencyError
        Ray is not installed; the message names the ``[ray]`` extra.
    ClusterError
        The cluster at ``address`` cannot be reached, or its workers run other versions.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        *,
        chunksize: int | None = None,
        check_versions: bool | None = None,
    ) -> None:
        for param, value in (("chunksize", chunksize), ("num_cpus", num_cpus)):
            if value is not None and value < 1:
                raise InputError(f"{param} must be at least 1, got {param}={value}")
        self.ray = import_optional("ray", purpose="--executor ray")
        self.address = resolve_ray_address(address)
        self.chunksize = chunksize
        self._started = False
        joined = False
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if self.address:
                _probe(self.address)
                kwargs["address"] = self.address
                joined = self.address != "local"
            else:
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
            try:
                self.ray.init(**kwargs)
            except Exception as exc:  # ConnectionError, a startup timeout (plain Exception), ...
                where = self.address or "a new local cluster"
                raise ClusterError(
                    f"cannot connect to the Ray cluster at {where}: {_first_line(exc)}",
                    hint="check --ray-address / $QCLI_RAY_ADDRESS and that the cluster is up "
                    "(`ray status` on the head node)",
                ) from exc
            self._started = True
        if check_versions or (check_versions is None and joined):
            try:
                self.check_versions()
            except Exception:
                self.close()  # leave no half-used connection behind a refused cluster
                raise

    @property
    def workers(self) -> int:
        """CPUs in the cluster right now (the number of tasks that can run at once)."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def check_versions(self) -> dict[str, str]:
        """Run one task on the cluster and compare its versions with the driver's.

        Returns the worker's versions; raises :class:`ClusterError` naming every mismatch.
        """
        ray = self.ray
        worker = ray.get(ray.remote(max_retries=0)(_versions).remote())
        driver = _versions()
        diff = [f"{k} {worker.get(k)} on workers vs {v} here" for k, v in driver.items()
                if worker.get(k) != v]  # fmt: skip
        if diff:
            raise ClusterError(
                "the Ray cluster runs other versions than this driver: " + "; ".join(diff),
                hint="install the same quantcli and dependencies in the cluster image "
                "(pip install 'quantcli[ray]==<version>') so results are identical",
            )
        return worker

    def _chunksize(self, n: int) -> int:
        if self.chunksize is not None:
            return self.chunksize
        return max(1, math.ceil(n / (CHUNKS_PER_CPU * self.workers)))

    def map(self, fn: TaskFn, tasks: Sequence[Any], *, on_done: OnDone | None = None) -> list[Any]:
        """``[fn(t) for t in tasks]`` run on the cluster; see :class:`Executor`.

        ``fn`` must be importable on the workers (a top-level function of an installed module),
        and every task and result picklable.
        """
        ray = self.ray
        tasks = list(tasks)
        n = len(tasks)
        if n == 0:
            return []
        payloads, shared = share(tasks, SHARE_MIN_BYTES)
        # Top-level ObjectRef arguments are resolved by Ray before the task runs (zero-copy for
        # NumPy/Arrow buffers), so each shared object crosses to a node once, not once per task.
        shared_refs = [ray.put(obj) for obj in shared]
        size = self._chunksize(n)
        chunks = [list(range(s, min(s + size, n))) for s in range(0, n, size)]
        remote = ray.remote(max_retries=0)(_run_chunk)
        refs = [remote.remote(fn, [(i, payloads[i]) for i in c], *shared_refs) for c in chunks]
        chunk_of = {ref: k for k, ref in enumerate(refs)}
        results: list[Any] = [None] * n
        pending = list(refs)
        failed: tuple[int, BaseException] | None = None  # (task index, exception)
        while pending:
            try:
                done, pending = ray.wait(pending, num_returns=1)
            except Exception as exc:  # the cluster itself went away
                raise _cluster_error(exc, None, n) from exc
            for ref in done:
                k = chunk_of[ref]
                try:
                    values = ray.get(ref)
                except Exception as exc:
                    index, err = self._unwrap(exc, chunks[k][0], n)
                    if failed is None or index < failed[0]:
                        failed = (index, err)
                    # Tasks after the failure are not needed; tasks before it still run, so the
                    # error reported is the lowest-index one, as on the local executor.
                    for other in pending:
                        if chunks[chunk_of[other]][0] > index:
                            ray.cancel(other)
                    pending = [p for p in pending if chunks[chunk_of[p]][0] < index]
                    continue
                for i, value in zip(chunks[k], values, strict=True):
                    results[i] = value
                    if on_done is not None and failed is None:
                        on_done(i)
        if failed is not None:
            raise failed[1]
        return results

    def _unwrap(self, exc: Exception, first: int, n: int) -> tuple[int, BaseException]:
        """The task's own exception (tagged with its index) out of Ray's wrapper."""
        ray_exc = self.ray.exceptions
        if isinstance(exc, ray_exc.RayTaskError):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ray_exc.RayError):
                # Ray itself failed inside the worker, typically unpickling the task because the
                # function's module is not installed there: an environment problem, not a bug.
                return first, _cluster_error(cause, first, n)
            err: BaseException = cause if isinstance(cause, BaseException) else exc
            index = getattr(err, "task_index", first)
            return index, _tag_failure(err, index, n, self.name)
        return first, _cluster_error(exc, first, n)

    def close(self) -> None:
        """Disconnect from (or stop) the cluster if this executor started the connection."""
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False


# Seconds to wait for a TCP connection to a HOST:PORT address before giving up. Without this probe
# ray.init retries an unreachable GCS address for minutes, and a Ray Client address for 30 s.
PROBE_TIMEOUT_S = 5.0


def _probe(address: str) -> None:
    """Fail fast with :class:`ClusterError` if a ``[ray://]HOST:PORT`` address does not answer."""
    if address in ("auto", "local"):
        return  # ray.init finds (or fails to find) the local cluster itself, quickly
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    hint = (
        "check --ray-address / $QCLI_RAY_ADDRESS (Ray Client listens on port 10001, "
        "the GCS on 6379) and that the cluster is up (`ray status` on the head node)"
    )
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S) as sock:
            # Both Ray endpoints are gRPC: an HTTP/2 server answers the client preface with a
            # SETTINGS frame. Anything else listening there would make ray.init retry for
            # minutes instead of failing.
            sock.sendall(_H2_PREFACE)
            reply = _read_some(sock, 9, time.monotonic() + PROBE_TIMEOUT_S)
    except OSError as exc:
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}", hint=hint
        ) from exc
    if len(reply) < 9 or reply[3] != 0x04:  # frame header: length(3) type(1): 4 = SETTINGS
        raise ClusterError(
            f"{address} answers, but not as a Ray cluster (no gRPC/HTTP2 server there)",
            hint=hint,
        )


# the HTTP/2 client connection preface, then an empty SETTINGS frame
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _read_some(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Up to ``n`` bytes, fewer when the peer closes; :class:`TimeoutError` (an ``OSError``)
    at ``deadline``, however slowly the bytes trickle in."""
    data = b""
    while len(data) < n:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cluster_error(exc: BaseException, index: int | None, n: int) -> ClusterError:
    where = f"task {index} of {n}" if index is not None else f"a map of {n} tasks"
    return ClusterError(
        f"the Ray cluster failed while running {where}: {type(exc).__name__}: {_first_line(exc)}",
        hint="a worker or node died (out of memory?) or the cluster went away; "
        "check `ray status` and rerun (the store was not changed)",
    )


def get_executor(
    name: str | Executor = "local", address: str | None = None, **kwargs: Any
) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); an executor instance passes through.

    ``address`` (``--ray-address``) only applies to ``ray``; ``kwargs`` go to
    :class:`RayExecutor` (``num_cpus``, ``chunksize``, ``check_versions``), or give the local
    executor its ``workers`` (threads; default 1, the sequential reference).

    Examples
    --------
    >>> get_executor("local").map(abs, [-2, 1, -3])
    [2, 1, 3]
    """
    if not isinstance(name, str):
        if hasattr(name, "map"):
            return name
        raise InputError(f"executor must be 'local', 'ray' or an executor, got {name!r}")
    if name == "local":
        if address:
            raise InputError(
                "--ray-address only applies with --executor ray",
                hint="add --executor ray, or drop --ray-address",
            )
        return LocalExecutor(workers=int(kwargs.get("workers", 1)))
    if name == "ray":
        return RayExecutor(address=address, **kwargs)
    raise InputError(f"unknown --executor '{name}'", hint="use --executor local or --executor ray")
