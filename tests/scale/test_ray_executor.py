"""The Ray executor on a real local cluster (2 CPUs) matches the local executor exactly."""

from __future__ import annotations

import pickle
import time

import numpy as np
import polars as pl
import pytest

from quantcli.errors import InputError
from quantcli.scale import ClusterError, LocalExecutor, RayExecutor
from quantcli.scale.executor import SHARE_MIN_BYTES


def _slow_inverse(x: int) -> tuple[int, float]:
    # Early tasks sleep longest, so tasks finish in reverse order on two workers.
    time.sleep(0.02 * (8 - x) if x < 8 else 0)
    return x, 1.0 / (x + 1)


def _fail_on_negative(x: int) -> int:
    if x < 0:
        time.sleep(0.05 if x == -1 else 0)  # the lowest-index failure finishes last
        raise InputError(f"symbol S{x}: not enough bars")
    return x


def _row_sums(task: tuple[np.ndarray, int]) -> float:
    matrix, row = task
    return float(matrix[row].sum())


def _frame_stats(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by("symbol").agg(pl.col("close").mean()).sort("symbol")


def _crash_worker(x: int) -> int:
    import os

    if x == 2:
        os._exit(1)  # a worker process dying (OOM killer, segfault) rather than a Python error
    return x


@pytest.mark.parametrize("chunksize", [None, 1, 3])
def test_results_in_task_order_whatever_order_they_finish(ray_executor, chunksize):
    ray_executor.chunksize = chunksize
    tasks = list(range(12))
    done: list[int] = []
    out = ray_executor.map(_slow_inverse, tasks, on_done=done.append)
    assert out == LocalExecutor().map(_slow_inverse, tasks)
    assert sorted(done) == tasks  # each task reported exactly once


def test_polars_frames_cross_the_cluster_unchanged(ray_executor, small_universe):
    shards = [small_universe.filter(pl.col("symbol") == s) for s in ["SYM0000", "SYM0003"]]
    assert all(s.height == 400 for s in shards)
    ray_out = ray_executor.map(_frame_stats, shards)
    local_out = LocalExecutor().map(_frame_stats, shards)
    assert len(ray_out) == 2
    for a, b in zip(ray_out, local_out, strict=True):
        assert a.equals(b)


def test_failure_is_the_lowest_index_one_as_on_the_local_executor(ray_executor):
    tasks = [0, 1, -1, 3, -2, 5, 6, 7]
    ray_executor.chunksize = 1
    with pytest.raises(InputError) as on_ray:
        ray_executor.map(_fail_on_negative, tasks)
    with pytest.raises(InputError) as on_local:
        LocalExecutor().map(_fail_on_negative, tasks)
    assert str(on_ray.value) == str(on_local.value) == "symbol S-1: not enough bars"
    assert on_ray.value.task_index == on_local.value.task_index == 2
    assert on_ray.value.__notes__ == ["task 2 of 8 on the ray executor"]
    assert on_ray.value.exit_code == 2  # the library error keeps its CLI exit code


def test_failure_inside_a_chunk_names_the_task_not_the_chunk(ray_executor):
    ray_executor.chunksize = 4
    with pytest.raises(InputError) as info:
        ray_executor.map(_fail_on_negative, [0, 1, 2, 3, 4, -5, 6, 7])
    assert info.value.task_index == 5
    assert str(info.value) == "symbol S-5: not enough bars"


def test_a_large_shared_member_is_put_in_the_object_store_once(ray_executor, ray_cluster):
    matrix = np.random.default_rng(0).normal(size=(400, 100))  # 320 kB, above the threshold
    assert len(pickle.dumps(matrix)) > SHARE_MIN_BYTES
    tasks = [(matrix, i) for i in range(40)]
    puts: list[object] = []
    real_put = ray_cluster.put

    def counting_put(value, **kwargs):
        puts.append(value)
        return real_put(value, **kwargs)

    ray_cluster.put = counting_put
    try:
        out = ray_executor.map(_row_sums, tasks)
    finally:
        ray_cluster.put = real_put
    assert out == [float(matrix[i].sum()) for i in range(40)]
    assert len(puts) == 1 and puts[0] is matrix


def test_a_dead_worker_becomes_a_cluster_error_naming_the_task(ray_executor):
    ray_executor.chunksize = 1
    with pytest.raises(ClusterError, match=r"while running task 2 of 4") as info:
        ray_executor.map(_crash_worker, [0, 1, 2, 3])
    assert info.value.exit_code == 2


def test_workers_run_the_drivers_versions(ray_executor):
    versions = ray_executor.check_versions()
    assert set(versions) == {"python", "quantcli", "polars", "numpy"}
    assert versions["polars"] == pl.__version__ and versions["numpy"] == np.__version__
    assert ray_executor.workers == 2


def test_an_unreachable_address_fails_fast_with_one_line():
    # A fresh executor would call ray.init, which the session cluster already did; the probe
    # runs before that, so a closed port is reported without waiting for Ray's retries.
    from quantcli.scale.executor import _probe

    start = time.perf_counter()
    with pytest.raises(ClusterError, match=r"^cannot connect to the Ray cluster at ray://127\.0"):
        _probe("ray://127.0.0.1:9")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("reply", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"", b"\x00" * 3])
def test_a_listener_that_is_not_ray_is_refused_before_ray_init(reply):
    """A port that accepts TCP but speaks no HTTP/2 (a web server, or one that trickles
    nothing back) would keep ray.init retrying for minutes: the probe says so at once."""
    import socket
    import threading

    from quantcli.scale.executor import _probe

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(reply)
            if not reply:
                time.sleep(0.5)  # a peer that answers nothing and then closes

    threading.Thread(target=answer, daemon=True).start()
    with server, pytest.raises(ClusterError, match=r"answers, but not as a Ray cluster"):
        _probe(f"127.0.0.1:{port}")


def test_the_probe_accepts_the_running_clusters_gcs(ray_cluster):
    import ray

    from quantcli.scale.executor import _probe

    _probe(ray.get_runtime_context().gcs_address)  # raises if the GCS does not look like gRPC


def test_an_existing_connection_is_reused_and_not_closed(ray_cluster):
    executor = RayExecutor(address="ray://unused:10001")  # already initialized: address unused
    executor.close()
    assert ray_cluster.is_initialized()


def test_a_cluster_with_other_versions_is_refused(ray_executor, monkeypatch):
    real = pl.__version__
    monkeypatch.setattr(pl, "__version__", "0.0.1")  # the driver only: workers keep the real one
    with pytest.raises(ClusterError) as info:
        ray_executor.check_versions()
    assert str(info.value) == (
        f"the Ray cluster runs other versions than this driver: polars {real} on workers vs "
        "0.0.1 here"
    )
