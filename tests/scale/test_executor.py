"""Executor contract without a cluster: order, progress, failures, address parsing, sharing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from quantcli.errors import InputError
from quantcli.scale import LocalExecutor, get_executor, resolve_ray_address
from quantcli.scale._sharing import SHARE_MIN_BYTES, Shared, restore, share


def _square_or_fail(x: int) -> int:
    if x < 0:
        raise InputError(f"bad symbol S{x}")
    return x * x


def test_local_map_is_in_order_and_reports_each_task():
    done: list[int] = []
    out = LocalExecutor().map(_square_or_fail, [3, 1, 2], on_done=done.append)
    assert out == [9, 1, 4]
    assert done == [0, 1, 2]


def test_local_map_of_nothing_is_empty():
    assert LocalExecutor().map(_square_or_fail, []) == []


def test_executors_are_context_managers_that_close_on_exit():
    from quantcli.scale import RayExecutor

    with get_executor("local") as ex:
        assert ex.map(_square_or_fail, [2]) == [4]
    # RayExecutor closes through the same shared __exit__ (no cluster needed to see it)
    ray_ex = RayExecutor.__new__(RayExecutor)
    closed: list[bool] = []
    ray_ex.close = lambda: closed.append(True)
    with pytest.raises(InputError), ray_ex:
        raise InputError("task failed")
    assert closed == [True]


def test_local_failure_keeps_type_and_names_the_task():
    with pytest.raises(InputError) as info:
        LocalExecutor().map(_square_or_fail, [1, -1, -2, 4])
    assert str(info.value) == "bad symbol S-1"  # the first failure in task order
    assert info.value.task_index == 1
    assert info.value.__notes__ == ["task 1 of 4 on the local executor"]
    assert info.value.exit_code == 2


def _wait_then(x: tuple[float, int]) -> int:
    import time

    delay, value = x
    time.sleep(delay)
    return _square_or_fail(value)


def test_threaded_local_map_keeps_order_progress_and_the_lowest_failure():
    import threading

    done: list[int] = []
    # the later tasks finish first; results and progress still come in task order
    tasks = [(0.2, 3), (0.1, 1), (0.0, 2)]
    assert LocalExecutor(workers=3).map(_wait_then, tasks, on_done=done.append) == [9, 1, 4]
    assert done == [0, 1, 2]
    # task 3 fails at once, task 1 later: the error is task 1's, as the sequential loop's
    with pytest.raises(InputError) as info:
        LocalExecutor(workers=4).map(_wait_then, [(0.0, 1), (0.2, -1), (0.0, 5), (0.0, -3)])
    assert str(info.value) == "bad symbol S-1" and info.value.task_index == 1
    assert info.value.__notes__ == ["task 1 of 4 on the local executor"]
    # the tasks really run at once: two of them meet at a barrier only one thread cannot pass
    barrier = threading.Barrier(2, timeout=10)
    assert LocalExecutor(workers=2).map(lambda i: barrier.wait() * 0 + i, [0, 1]) == [0, 1]
    with pytest.raises(InputError, match="workers must be a positive integer"):
        LocalExecutor(workers=0)


def test_fit_threads_reads_the_environment(monkeypatch):
    from quantcli.scale import fit_threads

    monkeypatch.setenv("QCLI_FIT_THREADS", "3")
    assert fit_threads() == 3
    monkeypatch.setenv("QCLI_FIT_THREADS", "-1")
    with pytest.raises(InputError, match="QCLI_FIT_THREADS"):
        fit_threads()
    monkeypatch.delenv("QCLI_FIT_THREADS")
    assert fit_threads() == len(__import__("os").sched_getaffinity(0))


def test_get_executor_names_and_passthrough():
    local = get_executor("local")
    assert isinstance(local, LocalExecutor)
    assert get_executor(local) is local
    with pytest.raises(InputError, match="unknown --executor 'spark'"):
        get_executor("spark")
    with pytest.raises(InputError, match="--ray-address only applies with --executor ray"):
        get_executor("local", address="auto")
    with pytest.raises(InputError, match="executor must be"):
        get_executor(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "address",
    [
        "auto",
        "local",
        "ray://head-svc:10001",
        "10.0.0.5:6379",
        "ray://raycluster-head.ns.svc:10001",
    ],
)
def test_ray_address_accepted_forms(address):
    assert resolve_ray_address(address) == address


def test_ray_address_from_environment(monkeypatch):
    monkeypatch.setenv("QCLI_RAY_ADDRESS", "ray://head:10001")
    assert resolve_ray_address(None) == "ray://head:10001"
    assert resolve_ray_address("auto") == "auto"  # the option wins over the variable
    monkeypatch.delenv("QCLI_RAY_ADDRESS")
    assert resolve_ray_address(None) is None


@pytest.mark.parametrize("address", ["http://head:8265", "head", "ray://head", "a b:1"])
def test_bad_ray_address_names_the_option(address):
    with pytest.raises(InputError, match=rf"^--ray-address '{address}' is not a Ray address$"):
        resolve_ray_address(address)


def test_bad_ray_address_from_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("QCLI_RAY_ADDRESS", "nonsense")
    with pytest.raises(InputError, match=r"^\$QCLI_RAY_ADDRESS 'nonsense' is not a Ray address"):
        resolve_ray_address(None)


def test_share_puts_large_common_members_aside_once():
    big = np.arange(SHARE_MIN_BYTES // 8 + 10, dtype=np.float64)  # pickles above the threshold
    small = np.arange(4)
    tasks = [(big, small, i) for i in range(3)] + [{"x": big, "i": 9}]
    payloads, shared = share(tasks, SHARE_MIN_BYTES)
    assert len(shared) == 1 and shared[0] is big
    assert all(isinstance(p[0], Shared) and p[1] is small for p in payloads[:3])
    assert isinstance(payloads[3]["x"], Shared)
    restored = [restore(p, tuple(shared)) for p in payloads]
    assert [r[2] for r in restored[:3]] == [0, 1, 2]
    assert all(r[0] is big for r in restored[:3]) and restored[3]["x"] is big


def test_share_leaves_distinct_or_small_members_inline():
    tasks = [(np.arange(100_000), i) for i in range(3)]  # large but each task has its own
    assert share(tasks, SHARE_MIN_BYTES) == (tasks, [])
    tiny = np.arange(3)
    tasks = [(tiny, i) for i in range(3)]  # shared but small
    assert share(tasks, SHARE_MIN_BYTES) == (tasks, [])


def test_invalid_ray_executor_parameters_are_named():
    from quantcli.scale import RayExecutor

    with pytest.raises(InputError, match=r"chunksize must be at least 1, got chunksize=0"):
        RayExecutor(chunksize=0)
    with pytest.raises(InputError, match=r"num_cpus must be at least 1, got num_cpus=0"):
        RayExecutor(num_cpus=0)


@dataclasses.dataclass(frozen=True)
class _Split:
    split: int
    X: np.ndarray
    y: np.ndarray


@dataclasses.dataclass
class _Validated:
    X: np.ndarray
    i: int

    def __post_init__(self):
        if not isinstance(self.X, np.ndarray):
            raise TypeError("X must be an array")


def test_share_rebuilds_dataclass_payloads():
    X = np.ones((SHARE_MIN_BYTES // 8 + 1,))
    y = np.zeros(3)
    tasks = [_Split(i, X, y) for i in range(3)]
    payloads, shared = share(tasks, SHARE_MIN_BYTES)
    assert len(shared) == 1 and shared[0] is X
    assert all(isinstance(p.X, Shared) and p.y is y for p in payloads)
    restored = [restore(p, tuple(shared)) for p in payloads]
    assert [(r.split, r.X is X, r.y is y) for r in restored] == [(i, True, True) for i in range(3)]


def test_share_sends_self_validating_payloads_whole():
    X = np.ones((SHARE_MIN_BYTES // 8 + 1,))
    tasks = [_Validated(X, i) for i in range(3)]
    assert share(tasks, SHARE_MIN_BYTES) == (tasks, [])
