"""The documented Python API (docs/api.md), run as written, checked on its values.

Each example is copied verbatim, with only the import paths added (``from quantcli import
...``) and two values adapted to a test: the MLflow tracking URI (the test's own SQLite store,
not a server on localhost:5000) and the ONNX path handed to ``test_parity`` (the file the
pipeline wrote, under ``output_dir``). Names an example uses without defining them
(``market_data``, ``entity_df``, ``X``, ``y``, ``model``, ``returns``, ...) are built here from the
bundled sample. The store holds the sample (SPX, IXIC) plus two synthetic tickers named AAPL
and MSFT, because the online-features example asks for those.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import polars as pl
import pytest

FEATURE_REFS = ["technical_features_v1:nma_9", "technical_features_v1:bb_pct"]

# The module fixtures ingest, train and export once; under `pytest -n 2 --dist loadgroup` the
# whole module runs on one worker so they are not built again on the other.
pytestmark = pytest.mark.xdist_group("documented_api")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path):
    """A $QCLI_HOME with the sample (+ AAPL, MSFT) ingested, built, materialized; MLflow store."""
    home = tmp_path_factory.mktemp("api_home")
    work = tmp_path_factory.mktemp("api_work")
    shutil.copy(mlflow_template_db, home / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(work)
        from quantcli import (
            build_features,
            ingest_frame,
            ingest_sample,
            load_sample,
            materialize,
            synthetic_universe,
        )

        ingest_sample()
        # 300 business days ending with the sample (2018-12-31), so none of them is stale
        first = pd.bdate_range(end="2018-12-31", periods=300)[0].to_pydatetime()
        tickers = synthetic_universe(2, 300, seed=5, start=first.replace(tzinfo=UTC))
        tickers = tickers.with_columns(
            pl.col("symbol").replace({"SYM0000": "AAPL", "SYM0001": "MSFT"})
        )
        ingest_frame(tickers, source="synthetic AAPL/MSFT")
        build_features()
        materialize()
        yield SimpleNamespace(
            home=home,
            work=work,
            sample=load_sample(),
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        )


@pytest.fixture(scope="module")
def training(api):
    """``X_train``/``y_train`` as pandas, indexed by (symbol, ts): the sample's rows only."""
    from quantcli import load_training_frame

    frame = load_training_frame(symbols=["SPX", "IXIC"])
    pdf = frame.to_pandas().set_index(["symbol", "ts"])
    return SimpleNamespace(frame=frame, X_train=pdf.drop(columns=["label"]), y_train=pdf["label"])


# -- features -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_feature_generator(api, kind):
    from quantcli import FeatureGenerator, compute_features

    market_data = api.sample.to_pandas() if kind == "pandas" else api.sample

    generator = FeatureGenerator(seed=42)
    features = generator.compute_technical(market_data, validate=True)

    expected = compute_features(api.sample)  # the engine the offline store uses
    assert features.shape == (expected.height, expected.width - 2 if kind == "pandas" else 31)
    assert len(features) == expected.height == 9664
    if kind == "pandas":
        assert isinstance(features.features, pd.DataFrame)
        assert list(features.index.names) == ["symbol", "ts"]
        got = features["nma_9"].to_numpy()
    else:
        got = features["nma_9"].to_numpy()
    np.testing.assert_array_equal(got, expected["nma_9"].to_numpy())
    assert features.metadata["warmup_rows_dropped"] == 398
    assert features.metadata["validation_warnings"][0]["check"] == "zero_volume"


def test_feature_generator_refuses_bad_pandas_input_with_a_named_error(api):
    from quantcli import FeatureGenerator, InputError

    bars = api.sample.to_pandas().drop(columns=["volume"])
    with pytest.raises(InputError, match="volume"):
        FeatureGenerator(seed=42).compute_technical(bars, validate=True)


def test_feature_store(api):
    from quantcli import get_feature_store
    from quantcli.online import pit_join_duckdb

    entity_df = pd.DataFrame(
        {
            "symbol": ["SPX", "IXIC", "AAPL"],
            "ts": pd.to_datetime(["2018-06-01", "2018-06-01", "2018-12-31"], utc=True),
        }
    )

    store = get_feature_store()
    features = store.get_online_features(symbols=['AAPL', 'MSFT'],
        feature_refs=['technical_features_v1:nma_9', 'technical_features_v1:bb_pct'])  # fmt: skip
    training_data = store.get_historical_features(entity_df=entity_df, features=['technical_features_v1'])  # fmt: skip  # noqa: E501

    # online: the latest stored row of each ticker, online hits
    with store_rows(api.home, "AAPL", "MSFT") as latest:
        assert features.symbols == ["AAPL", "MSFT"]
        assert features.features == ["nma_9", "bb_pct"]
        np.testing.assert_array_equal(features.values, latest[["nma_9", "bb_pct"]].to_numpy())
    assert features.fallback == [None, None]
    # historical: a whole view, pandas in and out, equal to the DuckDB point-in-time oracle
    assert isinstance(training_data, pd.DataFrame)
    oracle = pit_join_duckdb(pl.from_pandas(entity_df)).to_pandas()
    assert list(training_data.columns) == list(oracle.columns)
    assert len(training_data.columns) == 2 + 29
    pd.testing.assert_frame_equal(training_data, oracle, check_dtype=False)
    assert training_data["rsi_14"].notna().all()


class store_rows:
    """The latest feature row of each symbol, read straight from the offline store."""

    def __init__(self, home: Path, *symbols: str) -> None:
        self.symbols = symbols

    def __enter__(self) -> pd.DataFrame:
        from quantcli.store.offline import OfflineStore

        with OfflineStore(read_only=True) as store:
            frame = store.con.sql(
                "SELECT * FROM technical_features_v1 QUALIFY row_number() OVER "
                "(PARTITION BY symbol ORDER BY ts DESC) = 1 ORDER BY symbol"
            ).df()
        return frame.set_index("symbol").loc[list(self.symbols)]

    def __exit__(self, *exc: object) -> None:
        return None


# -- CPCV ---------------------------------------------------------------------------------------
def test_cpcv_example_on_a_pandas_panel(training):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from quantcli import CombinatorialPurgedCV

    X = training.X_train.drop(columns=["label_end"]).sort_index()  # (symbol, ts): symbol-major
    y = training.y_train.loc[X.index]
    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    scores = []

    splitter = CombinatorialPurgedCV(n_splits=10, test_size=0.3, purge_pct=0.05, embargo_pct=0.01)
    for train_idx, test_idx in splitter.split(X):
        model.fit(X.iloc[train_idx], y.iloc[train_idx])
        score = model.score(X.iloc[test_idx], y.iloc[test_idx])
        scores.append(score)

    assert (splitter.n_groups, splitter.n_test_groups) == (10, 3)
    assert splitter.get_n_splits() == len(scores) == math.comb(10, 3) == 120
    assert all(np.isfinite(scores))
    # the splits are the ones of the same rows in time order (what the polars path sees)
    ts = X.index.get_level_values("ts")
    order = np.lexsort((X.index.get_level_values("symbol"), ts))
    polars_rows = pl.DataFrame({"ts": ts[order]})
    for (tr, te), (tr_p, te_p) in zip(splitter.split(X), splitter.split(polars_rows), strict=True):
        np.testing.assert_array_equal(tr, np.sort(order[tr_p]))
        np.testing.assert_array_equal(te, np.sort(order[te_p]))
        # both symbols of a date always fall on the same side
        assert not set(ts[tr]) & set(ts[te])


def test_cpcv_both_parametrizations_and_the_mapping():
    from quantcli import CombinatorialPurgedCV, InputError

    a = CombinatorialPurgedCV(n_splits=10, test_size=0.3)
    b = CombinatorialPurgedCV(n_groups=10, n_test_groups=3)
    assert (a.n_groups, a.n_test_groups, a.get_n_splits(), a.n_paths) == (10, 3, 120, 36)
    assert (b.n_groups, b.n_test_groups, b.get_n_splits()) == (10, 3, 120)
    assert CombinatorialPurgedCV(n_splits=6, test_size=2).get_n_splits() == 15
    assert CombinatorialPurgedCV(5, 2).get_n_splits() == 10
    assert CombinatorialPurgedCV().get_n_splits() == 45  # N=10, k=2
    with pytest.raises(InputError, match=r"test_size=0.25.*2.5 groups") as exc:
        CombinatorialPurgedCV(n_splits=10, test_size=0.25)
    assert "0.2 or 0.3" in exc.value.hint
    with pytest.raises(InputError, match="not both"):
        CombinatorialPurgedCV(n_groups=10, n_splits=10)
    with pytest.raises(InputError, match="not both"):
        CombinatorialPurgedCV(n_test_groups=2, test_size=0.2)
    with pytest.raises(InputError, match="test_size"):
        CombinatorialPurgedCV(n_splits=10, test_size=1.5)


def test_cpcv_pandas_without_a_time_index_says_so():
    from quantcli import CombinatorialPurgedCV, InputError

    X = pd.DataFrame({"f": np.arange(100.0)})
    with pytest.raises(InputError, match="carries no time: its index is a RangeIndex") as exc:
        next(CombinatorialPurgedCV(n_splits=5, test_size=0.4).split(X))
    assert "(symbol, ts) MultiIndex" in exc.value.hint


def test_cpcv_pandas_panel_purges_on_label_intervals():
    """Label intervals from a label_end index level purge exactly as in the polars path."""
    from quantcli import CombinatorialPurgedCV

    dates = pd.date_range("2020-01-01", periods=60, freq="D", tz="UTC")
    panel = pd.DataFrame(
        {
            "symbol": np.repeat(["A", "B"], 60),
            "ts": np.tile(dates, 2),
            "f": np.arange(120.0),
        }
    )
    # A's labels end 1 day later, B's 4 days later
    panel["label_end"] = panel["ts"] + pd.to_timedelta(np.repeat([1, 4], 60), unit="D")
    X = panel.set_index(["symbol", "ts", "label_end"])[["f"]]
    cv = CombinatorialPurgedCV(n_splits=6, test_size=2, embargo_pct=0.0)
    by_time = panel.sort_values(["ts", "symbol"], kind="stable")
    pos = by_time.index.to_numpy()
    got = list(cv.split(X))
    want = [
        (np.sort(pos[tr]), np.sort(pos[te]))
        for tr, te in cv.split(pl.from_pandas(by_time[["ts", "label_end"]]))
    ]
    for (tr, te), (tr_w, te_w) in zip(got, want, strict=True):
        np.testing.assert_array_equal(tr, tr_w)
        np.testing.assert_array_equal(te, te_w)
    # split 0 tests groups 0 and 1 (days 0-19, 10 days a group). B's test labels reach day 23,
    # so every training row of days 20-23 (A's and B's) overlaps a test label and is purged
    day = (panel["ts"] - dates[0]).dt.days.to_numpy()
    tr, te = got[0]
    np.testing.assert_array_equal(te, np.flatnonzero(day < 20))
    np.testing.assert_array_equal(tr, np.flatnonzero(day >= 24))


# -- the backtest gate --------------------------------------------------------------------------
def test_backtest_validator(api):
    from quantcli import BacktestValidator
    from quantcli.backtest import stats

    spx = api.sample.filter(pl.col("symbol") == "SPX")
    returns = spx["close"].pct_change().drop_nulls().to_pandas()  # a pandas Series

    validator = BacktestValidator(min_sharpe=1.2, min_psr=0.95, max_drawdown=-0.20)
    passed, metrics = validator.validate_model(returns)

    r = returns.to_numpy()
    sharpe = r.mean() / r.std(ddof=1) * math.sqrt(252)
    wealth = np.cumprod(1 + r)
    mdd = float((wealth / np.maximum.accumulate(np.maximum(wealth, 1.0)) - 1).min())
    assert passed is False and metrics["status"] == "fail"
    assert metrics["sharpe"] == pytest.approx(sharpe, rel=1e-12)
    assert metrics["max_drawdown"] == pytest.approx(mdd, rel=1e-12)
    assert metrics["win_rate"] == pytest.approx(float(np.mean(r > 0)), rel=1e-12)
    years = len(r) / 252
    assert metrics["annual_return"] == pytest.approx(wealth[-1] ** (1 / years) - 1, rel=1e-9)
    assert metrics["psr"] == pytest.approx(stats.psr(r), rel=1e-12)
    # one trial: DSR is PSR against a zero Sharpe ratio; more trials deflate it
    assert metrics["dsr"] == metrics["psr"] and metrics["n_trials"] == 1
    sr = metrics["sharpe_per_period"]
    _, deflated = validator.validate_model(returns, trial_sharpes=[sr, sr - 0.02, sr + 0.03])
    assert deflated["dsr"] < metrics["psr"] and deflated["n_trials"] == 3
    assert deflated["dsr"] == pytest.approx(
        stats.deflated_sharpe_ratio(
            sr, [sr, sr - 0.02, sr + 0.03], len(r), metrics["skew"], metrics["kurtosis"]
        ),
        rel=1e-12,
    )
    assert metrics["reasons"] == [
        f"Sharpe ratio {sharpe:.3f} < min_sharpe 1.2",
        f"PSR {metrics['psr']:.4f} < min_psr 0.95",
        f"max drawdown {mdd:.2%} is worse than max_drawdown -20%",
    ]


def test_dsr_oracle_through_the_validator():
    """The published DSR oracle (SR 1.14 per period, trials 3.5, 1.01, 1.02, T = 250)."""
    from quantcli.backtest import stats

    # the oracle is published to 5 decimals
    assert stats.deflated_sharpe_ratio(1.14, [3.5, 1.01, 1.02], 250) == pytest.approx(
        0.95836, abs=1e-5
    )


# -- training, registry -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(api, training):
    import lightgbm

    from quantcli import MLflowTrainer

    with warnings.catch_warnings():
        # mlflow.pyfunc warns at import time about its own type hints (a third-party notice)
        warnings.filterwarnings("ignore", message=".*type hint is inferred as AnyType")
        import mlflow.pyfunc  # noqa: F401

    X_train, y_train = training.X_train, training.y_train
    model = lightgbm.LGBMRegressor(verbose=-1)

    trainer = MLflowTrainer(experiment_name="quantcli-ensemble", tracking_uri=api.tracking_uri)
    results = trainer.train_with_cpcv(model=model, X=X_train, y=y_train, model_name="ensemble_v1",
        cv_splits=5, params={"n_estimators": 100}, tags={"strategy": "momentum"})  # fmt: skip

    return SimpleNamespace(trainer=trainer, results=results, model=model)


def test_train_with_cpcv_logs_what_the_comment_promises(api, training, trained):
    from mlflow import MlflowClient

    from quantcli.models.dataset import dataset_manifest, training_frame

    results = trained.results
    client = MlflowClient(api.tracking_uri)
    run = client.get_run(results.run_id)
    assert run.info.run_id == results.run_id and run.info.status == "FINISHED"
    # params, including the user's and the CPCV the run used (cv_splits=5 groups, k=2)
    assert run.data.params["lgbm_n_estimators"] == "100"
    assert run.data.params["cpcv_n_groups"] == "5"
    assert run.data.tags["strategy"] == "momentum"
    # per-fold CV metrics, one per split (C(5, 2) = 10), and their mean
    history = client.get_metric_history(results.run_id, "cv_ic")
    assert [m.step for m in history] == list(range(10))
    assert run.data.metrics["cv_ic_mean"] == pytest.approx(np.mean([m.value for m in history]))
    # dataset hash and feature names of the frame actually trained on
    frame, names = training_frame(training.X_train, training.y_train)
    from quantcli.models import tags as T

    assert run.data.tags[T.DATASET_SHA256] == dataset_manifest(frame)["sha256"]
    assert json.loads(run.data.tags[T.FEATURE_NAMES]) == names
    assert names == [c for c in training.X_train.columns if c != "label_end"]
    # signature, validation results, training date
    artifacts = {f.path for f in client.list_artifacts(results.run_id, "model")}
    assert "model/signature.json" in artifacts
    assert run.data.tags["quantcli.backtest.verdict"] == ("pass" if results.passed else "fail")
    assert json.loads(run.data.tags["quantcli.backtest.reasons"]) == list(results.reasons)
    assert "backtest_dsr" in run.data.metrics
    trained_at = datetime.fromisoformat(run.data.tags[T.TRAINED_AT])
    assert abs((datetime.now(UTC) - trained_at).total_seconds()) < 3600
    # registered as a new version with the staging alias; the caller's estimator untouched
    assert (results.registered_name, results.version, results.aliases) == (
        "ensemble_v1",
        "1",
        ["staging"],
    )
    import lightgbm

    # the caller's estimator is neither fitted nor re-parametrised in place
    assert not hasattr(trained.model, "booster_")
    assert trained.model.get_params() == lightgbm.LGBMRegressor(verbose=-1).get_params()


def test_promotion_is_gated_and_load_production_model_reads_the_production_alias(
    api, training, trained, caplog, qcli
):
    import lightgbm

    from quantcli import NotFoundError

    trainer = trained.trainer
    with pytest.raises(NotFoundError):  # nothing is production yet
        trainer.load_production_model(model_name="ensemble_v1", stage="Production")

    # refused: the gates (backtest verdict, parity, scan) are not all recorded and passed
    with caplog.at_level(logging.WARNING, logger="quantcli.models.trainer"):
        success = trainer.promote_model_to_production(model_name="ensemble_v1", version=None)  # latest in staging  # fmt: skip  # noqa: E501
    assert success is False
    reasons = trainer.last_promotion["reasons"]
    assert reasons and all(r in caplog.text for r in reasons)
    assert trainer.registry.alias_version("ensemble_v1", "production") is None
    # qcli refuses the same version with the same reasons: the API is not a way around a gate
    code, out, _ = qcli("model", "promote", "ensemble_v1", "--json")
    assert code == 1 and json.loads(out)["reasons"] == reasons

    # a governance override through qcli, then the example loads what it promoted
    code, _, _ = qcli(
        "model", "promote", "ensemble_v1", "--force", "--reason", "documented-API test"
    )
    assert code == 0
    model = trainer.load_production_model(model_name="ensemble_v1", stage="Production")
    assert (model.version, model.alias) == ("1", "production")
    frame = training.frame.sort(["ts", "symbol"], maintain_order=True)
    X_all = frame.select(model.feature_names).to_numpy().astype(np.float64)
    # the refit is the estimator with the params given and the grid configuration the CPCV
    # backtest selected (logged with the run)
    from mlflow import MlflowClient

    run = MlflowClient(api.tracking_uri).get_run(trained.results.run_id)
    selected = json.loads(run.data.params["backtest_selected_params"])
    refit = lightgbm.LGBMRegressor(verbose=-1, n_estimators=100, **selected).fit(
        X_all, frame["label"].to_numpy()
    )
    np.testing.assert_array_equal(model.predict(X_all[:200]), refit.predict(X_all[:200]))
    # an override does not make the version pass its gates: the API still says no
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="quantcli.models.trainer"):
        assert trainer.promote_model_to_production(model_name="ensemble_v1") is False
    assert trainer.last_promotion["reasons"] == reasons and reasons[0] in caplog.text
    assert trainer.registry.alias_version("ensemble_v1", "production") == "1"
    staged = trainer.load_production_model(model_name="ensemble_v1", stage="Staging")
    assert staged.alias == "staging" and staged.version == "1"
    with pytest.raises(ValueError, match="stage"):
        trainer.load_production_model(model_name="ensemble_v1", stage="Archived")


def test_trainer_refuses_what_it_cannot_serialise_and_reserved_tags(api, training):
    from sklearn.linear_model import Ridge

    from quantcli import InputError, MLflowTrainer

    trainer = MLflowTrainer(experiment_name="quantcli-ensemble", tracking_uri=api.tracking_uri)
    with pytest.raises(InputError, match="unsupported model type Ridge"):
        trainer.train_with_cpcv(model=Ridge(), X=training.X_train, y=training.y_train)
    with pytest.raises(InputError, match="reserved"):
        trainer.train_with_cpcv(
            model="lgbm", X=training.X_train, y=training.y_train, tags={"quantcli.x": "1"}
        )
    with pytest.raises(InputError, match="cv_splits"):
        trainer.train_with_cpcv(model="lgbm", X=training.X_train, y=training.y_train, cv_splits=2)


# -- ONNX ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(api, training):
    from quantcli import convert_and_validate_pipeline
    from quantcli.models.estimators import make_model

    X_test = training.X_train.drop(columns=["label_end"]).iloc[-1500:]
    X_fit = training.X_train.drop(columns=["label_end"]).iloc[:-1500]
    trained_model = make_model("ensemble", {"lgbm": {"n_estimators": 50}}, seed=7).fit(
        X_fit.to_numpy(), training.y_train.iloc[:-1500].to_numpy()
    )

    results = convert_and_validate_pipeline(model=trained_model, model_name="ensemble_v1",
        X_sample=X_test[:1000], output_dir="models/production/")  # fmt: skip

    return SimpleNamespace(results=results, model=trained_model, X_test=X_test)


def test_convert_and_validate_pipeline_quantizes_where_int8_is_real(api, exported):
    results = exported.results
    out = api.work / "models" / "production"
    assert Path(results.fp32.path).resolve() == out / "ensemble_v1.fp32.onnx"
    assert results.fp32_parity["passed"] and results.fp32_parity["max_loss_pct"] == 0.1
    assert results.fp32_parity["relative_error_pct"] < 0.1
    # the MLP member has MatMul/Gemm operators: a real INT8 graph, judged at 1 %
    assert results.quantization["quantized"] is True
    assert Path(results.int8.path).resolve() == out / "ensemble_v1.int8.onnx"
    assert results.int8.size_bytes < results.fp32.size_bytes
    int8 = results.int8_parity
    assert int8["max_loss_pct"] == 1.0 and int8["precision"] == "int8"
    # judged at the INT8 limit: on the sample's returns INT8 loses more than 1 %, and says so
    assert int8["passed"] == (max(int8["relative_error_pct"], int8["flipped_pct"]) < 1.0)
    assert results.passed == int8["passed"]
    # benchmarks and a report with a recommendation (never a graph that failed parity)
    assert results.latency["recommendation"] in ("fp32", "int8")
    if not int8["passed"]:
        assert results.latency["recommendation"] == "fp32"
    report = (out / "ensemble_v1.export.txt").read_text()
    verdict = "PASS" if int8["passed"] else "FAIL"
    assert any(line.startswith("int8") and line.endswith(verdict) for line in report.splitlines())


def test_trees_only_are_reported_not_quantizable(api, training, tmp_path):
    from quantcli import convert_and_validate_pipeline
    from quantcli.models.estimators import make_model

    X = training.X_train.drop(columns=["label_end"])
    trees = make_model("lgbm", {"n_estimators": 20}, seed=1).fit(
        X.to_numpy(), training.y_train.to_numpy()
    )
    res = convert_and_validate_pipeline(trees, "trees", X[:300], tmp_path, benchmark=False)
    assert res.int8 is None and not (tmp_path / "trees.int8.onnx").exists()
    assert "not quantizable" in res.quantization["reason"]
    assert "not quantizable" in (tmp_path / "trees.export.txt").read_text()


def test_onnx_parity_tester_judges_int8_at_the_int8_limit(api, exported):
    from quantcli import ONNXParityTester

    model, X_test = exported.model, exported.X_test
    int8_path = exported.results.int8.path

    tester = ONNXParityTester(atol=1e-3, rtol=1e-2)
    passed, metrics = tester.test_parity(original_model=model,
        onnx_path=int8_path, X_sample=X_test)  # MAE, RMSE, max diff, rel. error %  # fmt: skip

    assert (metrics["precision"], metrics["max_loss_pct"]) == ("int8", 1.0)
    assert passed == (metrics["loss_pct"] < 1.0) and passed == (not metrics["reasons"])
    assert metrics["n"] == len(X_test)
    ref = model.predict(X_test.to_numpy())
    import onnxruntime as ort

    sess = ort.InferenceSession(int8_path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: X_test.to_numpy(np.float32)})[0].ravel()
    d = got - ref
    assert metrics["mae"] == pytest.approx(np.abs(d).mean(), rel=1e-6)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(d**2)), rel=1e-6)
    assert metrics["max_abs_diff"] == pytest.approx(np.abs(d).max(), rel=1e-6)
    assert metrics["relative_error_pct"] == pytest.approx(
        100 * np.abs(d).sum() / np.abs(ref).sum(), rel=1e-6
    )
    # atol/rtol: the per-row closeness that is reported, not gated
    within = 100 * np.mean(np.abs(d) <= 1e-3 + 1e-2 * np.abs(ref))
    assert metrics["within_tolerance_pct"] == pytest.approx(within)
    # the FP32 graph is judged at 0.1 %, and an explicit limit still wins
    _, fp32 = tester.test_parity(model, exported.results.fp32.path, X_test)
    assert (fp32["precision"], fp32["max_loss_pct"]) == ("fp32", 0.1)
    _, strict = ONNXParityTester(max_loss_pct=0.1).test_parity(model, int8_path, X_test)
    assert strict["max_loss_pct"] == 0.1


def test_a_loss_between_the_limits_passes_int8_and_fails_fp32():
    """0.5 % parity loss: inside the INT8 limit (1 %), outside the FP32 one (0.1 %)."""
    from quantcli import ONNXParityTester

    ref = np.linspace(0.5, 1.5, 1000)
    got = ref * 1.005  # 0.5 % relative L1 error, no sign flips
    tester = ONNXParityTester(atol=1e-3, rtol=1e-2)
    ok_int8, m8 = tester.evaluate(ref, got, precision="int8")
    ok_fp32, m32 = tester.evaluate(ref, got, precision="fp32")
    assert m8["relative_error_pct"] == pytest.approx(0.5)
    assert (ok_int8, ok_fp32) == (True, False)
    assert m32["reasons"] == ["relative error 0.5000 % >= 0.1 %"]
    # atol/rtol: every row is within 1e-3 + 1 % of its reference, reported not gated
    assert m8["within_tolerance_pct"] == 100.0


# -- monitoring ---------------------------------------------------------------------------------
def test_drift_performance_and_retraining(api, training):
    from quantcli import DriftDetector, PerformanceMonitor, RetrainingTrigger

    X = training.X_train.reset_index()
    baseline_features = X[X["ts"] < pd.Timestamp("2008-01-01", tz="UTC")]
    production_features = X[X["ts"] >= pd.Timestamp("2016-01-01", tz="UTC")]

    detector = DriftDetector(psi_threshold=0.1, ks_threshold=0.05, jsd_threshold=0.05)
    drift_results = detector.detect_feature_drift(baseline_df=baseline_features,
        current_df=production_features, features=['nma_9', 'bb_pct', 'volume_z_20'])  # fmt: skip

    by_name = {f.feature: f for f in drift_results.features}
    assert set(by_name) == {"nma_9", "bb_pct", "volume_z_20"}
    from scipy.stats import ks_2samp

    for name, f in by_name.items():
        ks = ks_2samp(baseline_features[name], production_features[name])
        assert f.ks_statistic == pytest.approx(ks.statistic, rel=1e-9)
    polars_result = detector.detect_feature_drift(
        pl.from_pandas(baseline_features), pl.from_pandas(production_features),
        features=["nma_9", "bb_pct", "volume_z_20"],
    )  # fmt: skip
    assert [f.psi for f in polars_result.features] == [f.psi for f in drift_results.features]

    monitor = PerformanceMonitor(window_size=1000, min_sharpe=1.0, max_drawdown=-0.25)
    rng = np.random.default_rng(3)
    actuals = rng.normal(0.0005, 0.01, size=30)
    for i, actual in enumerate(actuals):
        prediction = float(np.sign(actual) if i % 3 else -np.sign(actual)) * 0.01
        monitor.log_prediction(timestamp=datetime.now(), prediction=prediction, actual=actual)
    metrics = monitor.calculate_metrics()

    assert metrics["n_samples"] == 30
    assert metrics["direction_accuracy"] == pytest.approx(20 / 30)

    trigger = RetrainingTrigger(schedule_days=90, min_samples=10000, drift_threshold=3)
    should_retrain, reasons = trigger.should_retrain(drift_results=drift_results, performance_metrics=metrics)  # fmt: skip  # noqa: E501
    trigger.mark_training_completed()

    assert should_retrain is True
    assert reasons[0] == "schedule: no completed training on record"
    drifted = len(drift_results.drifted_features)
    assert any(r.startswith("drift:") for r in reasons) == (drifted >= 3)
    assert trigger.last_trained_at() is not None
    due, reasons = trigger.should_retrain(drift_results=None, performance_metrics=None)
    assert (due, reasons) == (False, [])


# -- one front door -----------------------------------------------------------------------------
def test_every_name_is_importable_from_quantcli():
    import quantcli

    for name in quantcli.__all__:
        assert getattr(quantcli, name) is not None, name
    for name in (
        "FeatureGenerator",
        "CombinatorialPurgedCV",
        "BacktestValidator",
        "MLflowTrainer",
        "ONNXParityTester",
        "DriftDetector",
        "PerformanceMonitor",
        "RetrainingTrigger",
        "get_feature_store",
        "convert_and_validate_pipeline",
    ):
        assert name in quantcli.__all__
    with pytest.raises(AttributeError):
        quantcli.NoSuchThing  # noqa: B018


def test_import_quantcli_loads_no_heavy_library():
    import subprocess
    import sys

    heavy = ["mlflow", "feast", "onnxruntime", "lightgbm", "ray", "sklearn"]
    code = (
        "import sys, quantcli\n"
        "from quantcli import FeatureGenerator, CombinatorialPurgedCV\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_api_doc_shows_every_example():
    """docs/api.md carries each documented call, so the page and this test cannot drift apart."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    for call in (
        "generator.compute_technical(market_data, validate=True)",
        "store.get_online_features(symbols=['AAPL', 'MSFT']",
        "store.get_historical_features(entity_df=entity_df, features=['technical_features_v1'])",
        "CombinatorialPurgedCV(n_splits=10, test_size=0.3, purge_pct=0.05, embargo_pct=0.01)",
        "validator.validate_model(returns)",
        'trainer.train_with_cpcv(model=model, X=X_train, y=y_train, model_name="ensemble_v1"',
        'trainer.load_production_model(model_name="ensemble_v1", stage="Production")',
        'trainer.promote_model_to_production(model_name="ensemble_v1", version=None)',
        'convert_and_validate_pipeline(model=trained_model, model_name="ensemble_v1"',
        "tester.test_parity(original_model=model",
        "detector.detect_feature_drift(baseline_df=baseline_features",
        "monitor.log_prediction(timestamp=datetime.now(), prediction=prediction, actual=actual)",
        "trigger.should_retrain(drift_results=drift_results, performance_metrics=metrics)",
        "trigger.mark_training_completed()",
    ):
        assert call in text, call
