"""Shared fixtures: an isolated $QCLI_HOME per test, Hypothesis profiles, small synthetic data,
the one CLI runner (``qcli``) and the one model-registration fixture (``register_model``).

Also what makes the suite safe under pytest-xdist (each worker its own Redis database) and the
one-line wall-time report that ends every run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: `dev` (fast, default), `ci` (thorough).
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def worker_redis_url(url: str, worker: str) -> str:
    """``url`` moved to a database of its own for xdist worker ``worker`` (``gw0``, ``gw1``, ...).

    The Redis tests flush their database; two workers on one database would flush each other's
    keys mid-test. Worker N takes database base + 1 + N, so the base one stays the serial run's.
    """
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    db = base + 1 + int(worker.removeprefix("gw"))
    if db > 15:  # redis-server's default `databases 16`
        raise RuntimeError(
            f"xdist worker {worker} needs Redis database {db}; use at most -n {15 - base}"
        )
    return urlunsplit(parts._replace(path=f"/{db}"))


# At import, before any test module reads it (tests/_docs_pages.py reads it at import time).
# The serial URL is kept aside so that importing this module twice moves the URL only once.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("QCLI_TEST_REDIS_URL"):
    _serial = os.environ.setdefault("QCLI_TEST_REDIS_SERIAL_URL", os.environ["QCLI_TEST_REDIS_URL"])
    os.environ["QCLI_TEST_REDIS_URL"] = worker_redis_url(_serial, os.environ["PYTEST_XDIST_WORKER"])


_STARTED = pytest.StashKey[float]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_STARTED] = time.monotonic()
    controller = not hasattr(session.config, "workerinput")
    wanted = os.environ.get("QCLI_TEST_WARM_KERNELS", "1") != "0"
    if getattr(session.config.option, "numprocesses", None) and controller and wanted:
        # the xdist controller, before its workers start: fill Numba's cache once rather than
        # in every worker and subprocess at once (times in the README)
        subprocess.run([sys.executable, "-m", "tests._warm_kernels"], check=True)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line at the end of every run: the wall time, the workers, the CPUs and the load."""
    if hasattr(config, "workerinput") or _STARTED not in config.stash:
        return  # an xdist worker: the controller reports for the whole run
    wall = time.monotonic() - config.stash[_STARTED]
    workers = getattr(config.option, "numprocesses", None) or 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    how = f"{workers} xdist workers" if workers else "1 process (no xdist)"
    terminalreporter.write_line(
        f"suite wall time: {wall:.1f} s ({how}, {cpus} CPUs, load average {load})"
    )


@pytest.fixture
def qcli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty $QCLI_HOME for one test (also exported to subprocesses)."""
    home = tmp_path / "qcli_home"
    home.mkdir()
    monkeypatch.setenv("QCLI_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(scope="session")
def small_universe():
    """8 symbols x 400 business days, seeded; no planted signal."""
    from quantcli.data.synthetic import synthetic_universe

    return synthetic_universe(n_symbols=8, n_days=400, seed=7)


def migrate_mlflow_store(db: Path) -> None:
    """Create the MLflow SQLite store ``db`` and run its migrations (what a first use does)."""
    import warnings

    from mlflow import MlflowClient

    with warnings.catch_warnings():
        # MLflow's SQLAlchemy store uses the deprecated `noload` strategy (SADeprecationWarning)
        warnings.simplefilter("ignore")
        client = MlflowClient(f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
        client.search_experiments()
        client.search_registered_models()


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite store, created once per session; tests copy it.

    A fresh store runs MLflow's migrations (about 9 s on a busy 2-core machine); a copy is an
    identical file, so every test that needs an empty registry copies this one instead.
    """
    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    migrate_mlflow_store(db)
    return db


@pytest.fixture
def store_holder(qcli_home: Path):
    """A second, real process holding ``$QCLI_HOME/offline.duckdb`` open (DuckDB's file lock).

    Yields once the holder has the store; the lock goes with the process at teardown.
    """
    import subprocess
    import sys

    from quantcli.store.offline import OfflineStore

    OfflineStore().close()  # the file exists, so the holder opens rather than creates it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom quantcli.store.offline import OfflineStore\n"
            "s = OfflineStore()\nprint('ready', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


@pytest.fixture
def register_model(qcli_home: Path, mlflow_template_db: Path):
    """The one model-registration fixture: :func:`tests._registration.register_model`.

    ``register_model(name, *, kind="lgbm", frame=None, features=None, params=None, seed=1,
    tracking_uri=None, backtest=None, verdicts=None, alias="staging", onnx=None, lineage=True,
    tags=None, experiment="tests")`` fits and registers a version through the library's registry
    and returns a :class:`~tests._registration.Registered` (name, version, run id, feature names).
    The embedded registry starts as a copy of the migrated template (unless the test made one).
    """
    import shutil

    from _registration import register_model as register

    if not (qcli_home / "mlflow.db").exists():
        shutil.copy(mlflow_template_db, qcli_home / "mlflow.db")
    return register


@dataclass(frozen=True)
class CliRun:
    """One ``qcli`` invocation: exit ``code``, captured ``out`` and ``err``."""

    code: int
    out: str
    err: str

    @property
    def json(self):
        """stdout parsed as the one JSON object ``--json`` promises."""
        return json.loads(self.out)

    def __iter__(self):  # ``code, out, err = qcli(...)``
        return iter((self.code, self.out, self.err))

    def __getitem__(self, index):  # ``qcli(...)[0]``, as the tuple it unpacks to
        return (self.code, self.out, self.err)[index]


@pytest.fixture
def qcli(capsys):
    """Run ``qcli ARGS`` in this process through the real ``main`` and its one error handler.

    ``qcli(*args)`` returns a :class:`CliRun`; ``qcli.subprocess(*args, env=..., timeout=...)``
    runs a fresh interpreter instead, for what needs a real process (signals, import cost,
    a second writer). In-process is the default because a fresh interpreter spends seconds
    importing Feast and MLflow.
    """

    def run(*args: str) -> CliRun:
        from quantcli.cli import main

        capsys.readouterr()
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:  # pragma: no cover - main always exits
            code = 0
        out, err = capsys.readouterr()
        return CliRun(code, out, err)

    def in_subprocess(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
        proc = subprocess.run(
            [sys.executable, "-m", "quantcli", *[str(a) for a in args]],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
        )
        return CliRun(proc.returncode, proc.stdout, proc.stderr)

    run.subprocess = in_subprocess
    return run
