"""The inference runtime: integrity before loading, input validation, audit tags."""

from __future__ import annotations

import numpy as np
import onnx
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantcli.errors import InputError, IntegrityError
from quantcli.integrity import sign_file
from quantcli.models.native import native_predict
from quantcli.models.onnx_convert import to_onnx
from quantcli.serving.runtime import InferenceRuntime

AUDIT = {
    "model_name": "momentum",
    "model_version": "3",
    "model_run_id": "run-1",
    "feature_set": "technical_v1",
    "feature_set_version": "1",
    "dataset_manifest_id": "abc123",
}


@pytest.fixture
def signed(models, synthetic_data, qcli_home, tmp_path):
    path = tmp_path / "model.fp32.onnx"
    onnx.save(to_onnx(models[("synthetic", "ensemble")], 29), str(path))
    sha, sig = sign_file(path)
    return path, sha, sig


@pytest.fixture
def runtime(signed, synthetic_data):
    path, sha, sig = signed
    return InferenceRuntime(path, sha, sig, synthetic_data.names, AUDIT)


def test_predictions_match_native_and_carry_audit_tags(runtime, models, synthetic_data, signed):
    X = synthetic_data.X_test[:50]
    frame = pl.DataFrame(X, schema=synthetic_data.names, orient="row")
    out = runtime.predict(frame)
    expected = native_predict(models[("synthetic", "ensemble")], X)
    np.testing.assert_allclose(out.predictions, expected, rtol=1e-4, atol=1e-6)
    assert out.predictions.dtype == np.float64 and out.predictions.shape == (50,)
    assert out.audit["onnx_sha256"] == signed[1]
    assert out.audit["onnx_name"] == "model.fp32.onnx"
    for key, value in AUDIT.items():
        assert out.audit[key] == value
    np.testing.assert_array_equal(runtime.predict(X).predictions, out.predictions)
    # one row as a 1-D vector and as a mapping of columns
    one = runtime.predict(X[0]).predictions
    cols = runtime.predict({n: [X[0, j]] for j, n in enumerate(synthetic_data.names)})
    np.testing.assert_array_equal(one, out.predictions[:1])
    np.testing.assert_array_equal(cols.predictions, out.predictions[:1])


def test_session_threads_are_explicit(signed, synthetic_data):
    path, sha, sig = signed
    rt = InferenceRuntime(path, sha, sig, synthetic_data.names, intra_op_threads=2)
    opts = rt.session.get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1


def test_tampered_onnx_file_is_refused(signed, synthetic_data):
    path, sha, sig = signed
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        InferenceRuntime(path, sha, sig, synthetic_data.names)


def test_a_resigned_file_with_someone_elses_signature_is_refused(signed, synthetic_data, tmp_path):
    path, sha, _ = signed
    other = tmp_path / "other.bin"
    other.write_bytes(b"not the model")
    _, wrong_sig = sign_file(other)
    with pytest.raises(IntegrityError, match="signature does not verify"):
        InferenceRuntime(path, sha, wrong_sig, synthetic_data.names)
    with pytest.raises(IntegrityError, match="unsigned"):
        InferenceRuntime(path, sha, None, synthetic_data.names)


def test_wrong_feature_order_is_refused_naming_it(runtime, synthetic_data):
    names = list(synthetic_data.names)
    swapped = [names[1], names[0], *names[2:]]
    frame = pl.DataFrame(synthetic_data.X_test[:3], schema=swapped, orient="row")
    with pytest.raises(InputError, match=f"column 0 is '{names[1]}'.*expects '{names[0]}'"):
        runtime.predict(frame)


def test_missing_feature_is_refused_naming_it(runtime, synthetic_data):
    frame = pl.DataFrame(synthetic_data.X_test[:3], schema=synthetic_data.names, orient="row")
    with pytest.raises(InputError, match="missing feature 'rsi_14'"):
        runtime.predict(frame.drop("rsi_14"))
    with pytest.raises(InputError, match="unexpected column 'extra'"):
        runtime.predict(frame.with_columns(pl.lit(1.0).alias("extra")))
    with pytest.raises(InputError, match="expected 29 features"):
        runtime.predict(synthetic_data.X_test[:3, :28])


def test_nan_and_dtype_policy(runtime, synthetic_data):
    X = synthetic_data.X_test[:5].copy()
    X[3, 7] = np.nan
    with pytest.raises(InputError, match=f"feature '{synthetic_data.names[7]}' is NaN.*row 3"):
        runtime.predict(X)
    X[3, 7] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        runtime.predict(X)
    with pytest.raises(InputError, match="must be numeric"):
        runtime.predict(np.array([["a"] * 29]))


def test_signature_must_match_the_graph(signed, synthetic_data):
    path, sha, sig = signed
    with pytest.raises(InputError, match="takes 29 features but the signature names 28"):
        InferenceRuntime(path, sha, sig, synthetic_data.names[:28])


@given(perm=st.permutations(list(range(29))))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_reordering_is_refused_naming_the_first_misplaced_column(runtime, synthetic_data, perm):
    names = [synthetic_data.names[i] for i in perm]
    frame = pl.DataFrame(synthetic_data.X_test[:2, perm], schema=names, orient="row")
    first = next((i for i, j in enumerate(perm) if i != j), None)
    if first is None:  # the identity permutation is the signature itself
        assert runtime.predict(frame).predictions.shape == (2,)
        return
    with pytest.raises(InputError, match=f"column {first} is '{names[first]}'"):
        runtime.predict(frame)


@given(
    rows=st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=29, max_size=29),
        min_size=1,
        max_size=8,
    )
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_runtime_equals_a_bare_session_on_any_finite_rows(runtime, signed, rows):
    """Validation never changes the numbers: the runtime equals a raw onnxruntime call."""
    from quantcli.serving.session import make_session

    X = np.array(rows, dtype=np.float64)
    sess = make_session(signed[0])
    raw = sess.run(None, {"input": X.astype(np.float32)})[0].reshape(-1)
    np.testing.assert_array_equal(runtime.predict(X).predictions, raw.astype(np.float64))


def _session_predict(path, X: np.ndarray) -> np.ndarray:
    from quantcli.serving.session import make_session

    sess = make_session(path)
    return sess.run(None, {"input": X.astype(np.float32)})[0].reshape(-1).astype(np.float64)


def test_one_row_hot_path_equals_the_session(runtime, signed, synthetic_data):
    """The pre-bound one-row path (float64 1-D, [1, n], float32) returns the session's numbers."""
    X = synthetic_data.X_test[:20]
    expected = _session_predict(signed[0], X)
    for i in range(len(X)):
        for row in (X[i], X[i : i + 1], X[i].astype(np.float32)):
            out = runtime.predict(row)
            assert out.predictions.dtype == np.float64 and out.predictions.shape == (1,)
            assert out.predictions[0] == expected[i]
        assert runtime.predict_array(X[i : i + 1].astype(np.float32))[0] == np.float32(expected[i])
    # the returned array is a copy, not the bound output buffer
    first = runtime.predict(X[0]).predictions
    runtime.predict(X[1])
    assert first[0] == expected[0]


def test_one_row_hot_path_keeps_the_nan_policy(runtime, synthetic_data):
    row = synthetic_data.X_test[0].copy()
    row[5] = np.nan
    with pytest.raises(InputError, match=f"feature '{synthetic_data.names[5]}' is NaN.*row 0"):
        runtime.predict(row)
    row[5] = 1e300  # finite in float64, +inf once cast to the graph's float32
    with pytest.raises(InputError, match=f"feature '{synthetic_data.names[5]}' is NaN or infinite"):
        runtime.predict(row)
    row[5] = -np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        runtime.predict(row[None, :])
    # a rejected row leaves nothing behind: the next good row predicts normally
    good = synthetic_data.X_test[1]
    assert runtime.predict(good).predictions[0] == runtime.predict(good[None, :]).predictions[0]


def test_one_row_hot_path_is_thread_safe(runtime, signed, synthetic_data):
    """HTTP calls from a thread pool: each thread's row gets its own prediction back."""
    from concurrent.futures import ThreadPoolExecutor

    X = synthetic_data.X_test[:64]
    expected = _session_predict(signed[0], X)

    def worker(offset: int) -> list[tuple[int, float]]:
        out = []
        for rep in range(200):
            i = (offset + 7 * rep) % len(X)
            out.append((i, float(runtime.predict(X[i]).predictions[0])))
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [r for chunk in pool.map(worker, range(4)) for r in chunk]
    assert len(results) == 800
    for i, value in results:
        assert value == expected[i]


class _PublicOnly:
    """An ``InferenceSession`` seen through its public API only (no ``_sess`` internals), as an
    onnxruntime build without them would present it."""

    def __init__(self, session):
        self._s = session

    def get_inputs(self):
        return self._s.get_inputs()

    def get_outputs(self):
        return self._s.get_outputs()

    def io_binding(self):
        return self._s.io_binding()

    def run_with_iobinding(self, io):
        return self._s.run_with_iobinding(io)

    def run(self, *args, **kwargs):
        return self._s.run(*args, **kwargs)


def test_one_row_runner_falls_back_to_the_public_api(signed, synthetic_data):
    """OnnxRunner uses onnxruntime's C++ session when present; without it (a future onnxruntime),
    the public ``run_with_iobinding`` path gives the same numbers."""
    from quantcli.serving.session import OnnxRunner, make_session

    X = synthetic_data.X_test[:10].astype(np.float32)
    expected = _session_predict(signed[0], X).astype(np.float32)
    fast = OnnxRunner(make_session(signed[0]))
    public = OnnxRunner(_PublicOnly(make_session(signed[0])))
    assert fast._native_binding and not public._native_binding
    for i in range(len(X)):
        assert fast(X[i : i + 1])[0] == expected[i]
        assert public(X[i : i + 1])[0] == expected[i]
    np.testing.assert_array_equal(public(X), expected)  # batches take session.run either way
