"""Executors: run independent tasks (symbol shards, CPCV splits) locally or on a Ray cluster.

Both executors take a *pure* function and a list of task payloads and return the results **in task
order**, so every caller's output is identical whichever executor ran it. Ray is optional
(``pip install -e ".[ray]"``) and imported only when ``--executor ray`` is asked for.
"""

from quantcli.scale.executor import (
    ENV_RAY_ADDRESS,
    ClusterError,
    Executor,
    LocalExecutor,
    RayExecutor,
    fit_threads,
    get_executor,
    resolve_ray_address,
)

__all__ = [
    "ENV_RAY_ADDRESS",
    "ClusterError",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "fit_threads",
    "get_executor",
    "resolve_ray_address",
]
