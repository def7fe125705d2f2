"""One local Ray cluster (2 CPUs) for every Ray test: starting one costs 5-15 s on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with 2 CPUs, started once and shut down at the end of the session.

    Ray is a required test dependency (``.ci/run`` installs the ``[ray]`` extra): a missing Ray
    fails these tests instead of skipping them.
    """
    import ray

    if not ray.is_initialized():
        # Ray waits a fixed 30 s for its raylet; on a loaded 2-core CI box that can time out, so
        # one retry (the failure is about startup, never about the code under test).
        for attempt in (1, 2):
            try:
                ray.init(
                    num_cpus=2,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    # pytest imports this package as `scale.*` from tests/; the workers need the
                    # same path to unpickle the task functions defined here.
                    runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent.parent)}},
                )
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_executor(ray_cluster):
    """A :class:`RayExecutor` on the session cluster (it reuses the connection, starts nothing)."""
    from quantcli.scale import RayExecutor

    return RayExecutor()
