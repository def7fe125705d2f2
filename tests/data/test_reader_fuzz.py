"""Fuzzing the CSV and Parquet readers: arbitrary bytes are read or refused with one line naming
the file (and, for CSV, the line), exit code 2; never a traceback, never a Rust panic."""

from __future__ import annotations

import io
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantcli.data import synthetic_universe
from quantcli.data.ingest import read_files
from quantcli.errors import QuantCliError

# In-process examples cost a few milliseconds: four times the profile's count stays bounded.
FUZZ = settings(
    max_examples=4 * settings.default.max_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

GOOD_CSV = b"date,open,high,low,close,volume\n" + b"".join(
    b"2020-01-%02d,1,2,1,1.5,10\n" % day for day in range(2, 16)
)
TOKENS = [
    b"date", b"open", b"high", b"low", b"close", b"volume", b"symbol", b",", b"\n", b"\r\n",
    b'"', b"1", b"2.5", b"-3", b"2020-01-02", b"2020-12-31T23:59:60Z", b"\xff", b"\x00", b"nan",
    b"inf", b" ", b"1e400", b"9999-12-31", b"SPX", b"[b]", b"\xef\xbb\xbf", b"\t", b";",
]  # fmt: skip


def _parquet_bytes(text_ts: bool) -> bytes:
    bars = synthetic_universe(2, 30, seed=1)
    if text_ts:  # string columns exercise the text parser and UTF-8 validation
        bars = bars.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    buf = io.BytesIO()
    bars.write_parquet(buf, compression="uncompressed")
    return buf.getvalue()


GOOD_PARQUET = (_parquet_bytes(False), _parquet_bytes(True))


def _mutate(data: bytes, seed: int, n: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(n):
        out[rng.randrange(len(out))] = rng.getrandbits(8)
    return bytes(out)


def _check(path: Path, data: bytes, *, needs_line: bool) -> None:
    path.write_bytes(data)
    try:
        read_files([path], symbol="SPX")
    except QuantCliError as exc:
        message = str(exc)
        assert exc.exit_code == 2, message
        assert "\n" not in message and "\r" not in message, repr(message)
        assert message.startswith(str(path)), message
        if needs_line:
            assert " line " in message, message


csv_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join),
    st.tuples(st.integers(0, 2**32), st.integers(1, 6)).map(lambda t: _mutate(GOOD_CSV, *t)),
)


@FUZZ
@given(data=csv_bytes)
def test_any_bytes_as_csv_are_read_or_refused_naming_the_line(tmp_path, data):
    _check(tmp_path / "fuzz.csv", data, needs_line=True)


@FUZZ
@given(data=csv_bytes)
def test_any_gzipped_bytes_as_csv_are_read_or_refused_naming_the_line(tmp_path, data):
    import gzip

    _check(tmp_path / "fuzz.csv.gz", gzip.compress(data, mtime=0), needs_line=True)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.tuples(st.sampled_from(GOOD_PARQUET), st.integers(0, 2**32), st.integers(1, 8)).map(
            lambda t: _mutate(*t)
        ),
    )
)
def test_any_bytes_as_parquet_are_read_or_refused_with_exit_2(tmp_path, data):
    _check(tmp_path / "fuzz.parquet", data, needs_line=False)


def test_a_gzip_name_with_broken_gzip_bytes_names_the_file(tmp_path):
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 20)
    with pytest.raises(QuantCliError, match=r"broken\.csv\.gz"):
        read_files([path], symbol="SPX")


@pytest.mark.parametrize("seed", [56, 123])
def test_a_corrupt_parquet_file_that_makes_polars_panic_is_a_clean_exit_2(tmp_path, seed, qcli):
    """Bytes on which polars' own Parquet decoder panics (a Rust backtrace on stderr)."""
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(_mutate(GOOD_PARQUET[1], seed, 3))
    out = qcli.subprocess("data", "validate", path, env={"RUST_BACKTRACE": "1"}, timeout=120)
    assert out.code == 2, out.err
    assert out.err.startswith(f"Error: {path}"), out.err
    assert "panicked" not in out.err and "Traceback" not in out.err, out.err


_BATCH_CHILD = """
import sys
from pathlib import Path
from quantcli.data.ingest import read_files
from quantcli.errors import QuantCliError
for path in sys.argv[1:]:
    try:
        read_files([Path(path)])
    except QuantCliError as exc:
        assert exc.exit_code == 2 and "\\n" not in str(exc), str(exc)
print("clean exit", flush=True)
"""


def test_a_process_that_refused_corrupt_parquet_files_exits_cleanly(tmp_path):
    """Native readers may leave threads behind a corrupt file and abort() at interpreter exit;
    the refusals must leave nothing running (exit code, stderr)."""
    paths = []
    for seed in range(40):
        path = tmp_path / f"m{seed}.parquet"
        path.write_bytes(_mutate(GOOD_PARQUET[seed % 2], seed, 1 + seed % 5))
        paths.append(str(path))
    known = tmp_path / "abort.parquet"  # aborted the process with pyarrow's pre-buffering
    known.write_bytes(_mutate(GOOD_PARQUET[1], 56, 3))
    paths.append(str(known))
    out = subprocess.run(
        [sys.executable, "-c", _BATCH_CHILD, *paths],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (out.returncode, out.stdout) == (0, "clean exit\n"), out.stderr[-2000:]
    assert "panicked" not in out.stderr and "terminate" not in out.stderr, out.stderr[-2000:]
