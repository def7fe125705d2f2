"""No residue from killed builds: the next command removes their staging directories, and
repeated kill -9 of a build does not grow the store file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from quantcli.data import ingest_frame, synthetic_universe
from quantcli.store.offline import OfflineStore, remove_orphaned_staging, staging_prefix


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_the_staging_of_gone_processes_is_removed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / f".feature-build-{_dead_pid()}-abc"
        live = tmp_path / f".feature-build-{sleeper.pid}-def"
        own = tmp_path / f"{staging_prefix()}ghi"
        legacy = tmp_path / ".feature-build-x1y2z3"  # written before the pid was in the name
        for d in (dead, live, own, legacy):
            d.mkdir()
            (d / "rows-1.parquet").write_bytes(b"x" * 100)
        not_a_dir = tmp_path / ".feature-build-1-file"
        not_a_dir.write_text("kept")

        # a reader may run beside a build of an older version: it leaves unnamed ones alone
        assert remove_orphaned_staging(tmp_path, unnamed=False) == [dead]
        assert {p.name for p in tmp_path.iterdir()} == {
            live.name, own.name, legacy.name, not_a_dir.name,
        }  # fmt: skip
        # a writer holds the store's lock: no build of this store runs, unnamed ones go too
        with OfflineStore(tmp_path / "offline.duckdb"):
            pass
        assert {p.name for p in tmp_path.glob(".feature-build-*")} == {
            live.name, own.name, not_a_dir.name,
        }  # fmt: skip
    finally:
        sleeper.kill()
        sleeper.wait()


_KILLED_BUILD = """
from quantcli.features.build import build_features

def progress(done, total):
    if done == total - 2:  # most rows computed, waves written to the staging directory
        print("busy", flush=True)

build_features(full=True, shard_rows=2000, progress=progress)
print("finished", flush=True)
"""


@pytest.mark.timeout(300)
def test_repeated_kill_9_of_a_build_leaves_no_staging_and_no_growth(qcli_home):
    from quantcli.features.build import build_features

    ingest_frame(synthetic_universe(60, 2000, seed=5))
    build_features(full=True)
    store = qcli_home / "offline.duckdb"
    base = store.stat().st_size
    sizes = []
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_BUILD], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout.readline().strip() == "busy"
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=60) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
            child.stdout.close()
        # the killed process could not remove its staging directory ...
        left = [p.name for p in qcli_home.glob(".feature-build-*")]
        assert [n.startswith(f".feature-build-{child.pid}-") for n in left] == [True], left
        with OfflineStore(read_only=True):  # ... the next command, even a reader, does
            pass
        assert list(qcli_home.glob(".feature-build-*")) == []
        sizes.append(store.stat().st_size)
    # an uncommitted build never reached the file: killed builds do not grow it at all
    assert sizes == [base] * 3, (base, sizes)
    assert build_features(full=True).rows_written > 0  # and the store still builds
