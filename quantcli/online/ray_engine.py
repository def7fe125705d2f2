"""Feast's Ray batch engine (``ray.engine``) for ``qcli features materialize --executor ray``.

Two things quantcli adds around Feast's engine:

* :func:`ray_batch_engine` builds the ``batch_engine`` block of the Feast ``RepoConfig`` from the
  same ``--ray-address`` / ``$QCLI_RAY_ADDRESS`` as the executors (``ray_address`` of Feast's
  ``RayComputeEngineConfig``; no address: a local cluster, or the one this process already
  joined), and fails with the ``[ray]`` extra named when Ray is missing.
* :func:`check_ray_materialization_window` refuses a materialization that Feast's Ray engine
  would silently leave empty. When materializing, Feast's ``RayFilterNode`` keeps only rows
  with ``event_timestamp >= now - ttl`` (wall-clock *now*), while the local engine writes each
  entity's latest row in the window whatever its age. A backfill of history older than the
  view's TTL (5 days for ``technical_v1``) therefore writes **nothing** on the Ray engine and
  raises no error; quantcli raises instead (:func:`~quantcli.online.materialization.materialize`
  calls :func:`prepare_ray_materialization` before Feast runs).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from quantcli._optional import import_optional
from quantcli.errors import InputError
from quantcli.online.declaration import load_declaration
from quantcli.online.repo import ENGINES
from quantcli.scale.executor import RayExecutor, resolve_ray_address
from quantcli.workspace import Workspace

#: Feast's type name of its Ray compute engine.
RAY_ENGINE_TYPE = ENGINES["ray"]


def ray_batch_engine(address: str | None = None, **options: Any) -> dict[str, Any]:
    """The ``batch_engine`` config of Feast's Ray engine.

    Parameters
    ----------
    address
        ``--ray-address`` (``auto``, ``ray://HOST:PORT``, ``HOST:PORT``); default
        ``$QCLI_RAY_ADDRESS``; neither: a local cluster (or the one already joined).
    **options
        Further ``RayComputeEngineConfig`` fields (``max_workers``, ``write_concurrency``, ...).

    Raises
    ------
    MissingDependencyError
        Ray is not installed (names the ``[ray]`` extra).
    InputError
        The address is malformed (names the option or variable).

    Examples
    --------
    >>> ray_batch_engine("ray://raycluster-head-svc:10001")  # doctest: +SKIP
    {'type': 'ray.engine', 'ray_address': 'ray://raycluster-head-svc:10001'}
    """
    import_optional("ray", purpose="--executor ray")
    config: dict[str, Any] = {"type": RAY_ENGINE_TYPE, **options}
    resolved = resolve_ray_address(address)
    if resolved and resolved != "local":
        config["ray_address"] = resolved
    return config


def check_ray_materialization_window(
    data_end: datetime, ttl: timedelta, *, now: datetime | None = None
) -> None:
    """Refuse a Ray-engine materialization whose newest row is older than ``now - ttl``.

    Parameters
    ----------
    data_end
        Timestamp (UTC) of the newest feature row to materialize.
    ttl
        The feature view's time-to-live.
    now
        Wall-clock time Feast's engine will compare against (default: ``datetime.now(UTC)``).

    Raises
    ------
    InputError
        Every row would be dropped by Feast's Ray engine (see the module docstring); the hint
        says to use ``--executor local`` for a historical backfill.
    """
    now = now or datetime.now(UTC)
    if data_end.tzinfo is None:
        data_end = data_end.replace(tzinfo=UTC)
    cutoff = now - ttl
    if data_end < cutoff:
        raise InputError(
            f"--executor ray: the newest feature row ({data_end.isoformat()}) is older than "
            f"now - TTL ({cutoff.isoformat()}, TTL {ttl}); Feast's Ray engine would drop "
            "every row and write nothing to the online store",
            hint="materialize historical data with --executor local (same online values)",
        )


def prepare_ray_materialization(
    feature_set: str = "technical_v1",
    address: str | None = None,
    *,
    workspace: Workspace | None = None,
) -> RayExecutor:
    """Get ready for ``materialize(..., engine="ray")``: check the window, join the cluster.

    Run before Feast is touched, so a refused materialization writes nothing:

    1. the newest row of the feature table is checked against ``now - TTL``
       (:func:`check_ray_materialization_window`);
    2. Ray is initialized at ``address`` / ``$QCLI_RAY_ADDRESS`` (or a local cluster) through
       :class:`~quantcli.scale.RayExecutor`, with its address checks and fast failure; Feast's
       engine then reuses this connection instead of starting its own.

    Returns the :class:`~quantcli.scale.RayExecutor` (its ``address`` and ``workers``).

    Raises
    ------
    MissingDependencyError, InputError, ClusterError, NotFoundError
        Ray missing, a bad address or an old window, an unreachable cluster, no feature table.
    """
    import_optional("ray", purpose="--executor ray")
    resolve_ray_address(address)  # a malformed address fails before anything else
    decl = load_declaration(feature_set)
    with (workspace or Workspace.from_env()).offline(read_only=True) as store:
        store.require_table(
            decl.table, hint=f"build it first: qcli features build --feature-set {feature_set}"
        )
        data_end = store.con.execute(f"SELECT max(ts) FROM {decl.table}").fetchall()[0][0]
    if data_end is not None:
        check_ray_materialization_window(data_end, decl.ttl)
    return RayExecutor(address=address)
