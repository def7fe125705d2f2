"""The /predict body parser on arbitrary bytes: a (symbols, key) pair or a 400/422, nothing else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcli.serving.http import BadRequest, parse_predict_body


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_parse_or_are_refused_as_4xx(raw):
    try:
        symbols, key = parse_predict_body(raw)
    except BadRequest as exc:
        assert exc.status in (400, 422) and exc.kind in ("malformed_json", "bad_request")
        assert "\n" not in exc.message and len(exc.message) < 400
    else:
        body = json.loads(raw)
        assert symbols == body["symbols"] and key == body.get("key")


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_documents_parse_or_are_422(doc):
    raw = json.dumps(doc).encode()
    try:
        _, key = parse_predict_body(raw)
    except BadRequest as exc:
        assert exc.status == 422
    else:
        assert isinstance(doc, dict) and set(doc) <= {"symbols", "key"} and "symbols" in doc
        assert key is None or (isinstance(key, str) and 0 < len(key) <= 256)


@pytest.mark.parametrize(
    ("raw", "status", "needle"),
    [
        (b"[" * 100_000, 400, "nests too deeply"),
        (b'{"symbols": ' + b"[" * 100_000, 400, "nests too deeply"),
        (b"\xff", 400, "not JSON"),
        (b"NaN", 422, "body must be"),
        (b'{"symbols": ["A"], "key": ""}', 422, "`key` must be"),
        (b'{"symbols": ["A"], "' + b"x" * 10_000 + b'": 1}', 422, "unknown field"),
    ],
)
def test_reproducers(raw, status, needle):
    with pytest.raises(BadRequest) as exc:
        parse_predict_body(raw)
    assert exc.value.status == status and needle in exc.value.message
    assert len(exc.value.message) < 200
