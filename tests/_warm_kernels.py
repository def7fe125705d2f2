"""Fill Numba's on-disk cache once, before the xdist workers start (``python -m
tests._warm_kernels``).

On a fresh clone the cache is empty, and every worker and every ``qcli`` process a test starts
would compile the same kernels for itself, concurrently. One small run of each real path (the
kernel and Polars engines over every kind, the stream, a CPCV backtest, drift) compiles them
once; the tests then load them. It computes on synthetic bars and asserts nothing: the tests do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import quantcli
from quantcli.data.synthetic import synthetic_universe
from quantcli.features.blocks import sort_bars
from quantcli.features.compute import compile_plan, compute_features, compute_sorted
from quantcli.features.definitions import parse_feature_set
from quantcli.features.kinds import all_kinds, get_kind
from quantcli.features.stream import FeatureStream
from quantcli.models.estimators import ModelFactory
from quantcli.monitoring._drift_nb import ks_extremes_sorted, radix_sort_finite, smirnov_sf
from tests.features._kinds_runner import kernel_frame, run_kernel
from tests.features.test_kinds import USER_SET


def features(home: Path) -> None:
    bars = synthetic_universe(3, 300, seed=1)
    for engine in ("kernel", "polars"):
        compute_features(bars, engine=engine)
    path = home / "desk_all_v1.toml"
    path.write_text(USER_SET)
    every = parse_feature_set(path)
    ordered = sort_bars(bars)
    for engine in ("kernel", "polars"):
        compute_sorted(ordered, compile_plan(every, engine))
    kernel_frame(ordered, every)
    x = np.vstack([ordered[c].to_numpy()[:300].astype(np.float64) for c in ordered.columns[2:]])
    for name in all_kinds():  # each kind alone, as the kind tests run it
        kind = get_kind(name)
        if kind.scope == "bars":
            columns = [list(ordered.columns[2:]).index(c) for c in kind.inputs]
            params = {q.name: 5 if q.default is None else q.default for q in kind.params}
            run_kernel(kind, kind.check_params(params, "warm-up"), x[columns])
    stream = FeatureStream()
    stream.update(ordered.head(200))
    stream.update(ordered.tail(1))


def backtest_and_drift(home: Path) -> None:
    quantcli.ingest_frame(quantcli.synthetic_universe(2, 400, seed=2), source="warm-up")
    quantcli.build_features()
    frame = quantcli.load_training_frame()
    names = [c for c in frame.columns if c not in ("symbol", "ts", "label", "label_end")]
    names = [c for c in names if c != "fwd_return_1d"]
    for construction in ("sign", "rank", "vol_target"):
        quantcli.run_cpcv_backtest(
            frame,
            names,
            model_factory=ModelFactory("lgbm", {"n_estimators": 2}),
            param_grid=[{}, {"num_leaves": 7}],
            construction={"construction": construction},
        )
    values = np.random.default_rng(3).normal(size=60_000)
    radix_sort_finite(values)
    ks_extremes_sorted(values[:1000], values[1000:])
    smirnov_sf(500, 0.1)
    half = frame.height // 2
    quantcli.DriftDetector().detect_feature_drift(frame.head(half), frame.tail(half), names)


PARTS = {"features": features, "backtest": backtest_and_drift}


def main(argv: list[str]) -> None:
    """Both parts at once, one process each (Numba compiles under a process-wide lock)."""
    if argv:
        with tempfile.TemporaryDirectory(prefix="qcli-warm-") as tmp:
            os.environ["QCLI_HOME"] = str(Path(tmp) / "home")
            PARTS[argv[0]](Path(tmp))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QCLI_", "MLFLOW_"))}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests._warm_kernels", part], env=env, cwd=root)
        for part in PARTS
    ]
    for proc in procs:
        proc.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
