"""Streaming builds: an unchanged symbol continues from its stored kernel state over its new bars
only, and the table is byte for byte the full rebuild's; revised or back-filled bars rebuild."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.features import load_feature_set, state_codec
from quantcli.features.build import build_features
from quantcli.features.engine import KernelPlan
from quantcli.store.offline import OfflineStore

TABLE = "technical_features_v1"


def _table() -> pl.DataFrame:
    with OfflineStore(read_only=True) as store:
        return store.con.sql(f"SELECT * FROM {TABLE} ORDER BY symbol, ts").pl()


def _stored_states() -> list[tuple[str, int, bytes, str]]:
    with OfflineStore(read_only=True) as store:
        rows = store.con.execute(
            "SELECT symbol, n_bars, state, state_codec FROM feature_stream_state ORDER BY symbol"
        ).fetchall()
    return [(str(s), int(n), bytes(b), str(c)) for s, n, b, c in rows]


def _states() -> dict[str, tuple[int, bytes]]:
    """Each symbol's bars seen and its state's raw float64 bytes."""
    size = KernelPlan.of(load_feature_set("technical_v1")).state_size
    decoded = {s: (n, state_codec.decode(b, c, size)) for s, n, b, c in _stored_states()}
    assert all(raw is not None for _, raw in decoded.values())
    return decoded


@pytest.fixture(scope="module")
def universe() -> pl.DataFrame:
    return synthetic_universe(5, 420, seed=33)


def _days(bars: pl.DataFrame) -> pl.Series:
    return bars["ts"].unique().sort()


def test_new_bars_stream_from_state_and_equal_the_full_rebuild(qcli_home, universe):
    days = _days(universe)
    # 150 bars first: the warm-up (199) is not over yet when streaming starts
    ingest_frame(universe.filter(pl.col("ts") <= days[149]))
    first = build_features()
    assert first.paths == {"rewrite": sorted(universe["symbol"].unique())}
    for cut in (150, 198, 199, 200, 300, 419):  # through and after the warm-up boundary
        ingest_frame(universe.filter(pl.col("ts") <= days[cut]))
        step = build_features()
        assert step.paths == {"stream": sorted(universe["symbol"].unique())}, cut
        assert step.symbols_rewritten == []
    streamed, streamed_states = _table(), _states()
    full = build_features(full=True)
    assert full.paths == {"rewrite": sorted(universe["symbol"].unique())}
    # same bytes: the feature rows and the stored states
    assert _table().equals(streamed)
    assert _states() == streamed_states
    plan = KernelPlan.of(load_feature_set("technical_v1"))
    assert {len(b) for _, b in streamed_states.values()} == {8 * plan.state_size}
    assert {n for n, _ in streamed_states.values()} == {420}


def _state_column_ddl() -> str:
    with OfflineStore(read_only=True) as store:
        return store.con.execute(
            "SELECT sql FROM duckdb_tables() WHERE table_name = 'feature_stream_state'"
        ).fetchall()[0][0]


# feature_stream_state as stores created before the codec column and the uncompressed column
_OLD_STATE_TABLE = """
CREATE TABLE feature_stream_state (
    feature_set VARCHAR NOT NULL, symbol VARCHAR NOT NULL, layout_sha256 VARCHAR NOT NULL,
    n_bars BIGINT NOT NULL, last_bar_ts TIMESTAMP WITH TIME ZONE NOT NULL, state BLOB NOT NULL,
    bars_fingerprint VARCHAR NOT NULL DEFAULT '', PRIMARY KEY (feature_set, symbol))
"""


def test_an_older_stores_raw_states_are_moved_once_and_keep_streaming(qcli_home, universe):
    days = _days(universe)
    ingest_frame(universe.filter(pl.col("ts") <= days[300]))
    build_features()
    states = _states()
    # the table an older version wrote: raw float64 bytes, no codec column, default compression,
    # the rows in another order than the symbols'
    with OfflineStore() as store:
        con = store.con
        con.execute("CREATE TABLE old_states AS SELECT * FROM feature_stream_state")
        con.execute("DROP TABLE feature_stream_state")
        con.execute(_OLD_STATE_TABLE)
        for symbol in sorted(states, reverse=True):
            con.execute(
                "INSERT INTO feature_stream_state SELECT feature_set, symbol, layout_sha256, "
                "n_bars, last_bar_ts, ?, bars_fingerprint FROM old_states WHERE symbol = ?",
                [states[symbol][1], symbol],
            )
        con.execute("DROP TABLE old_states")
    assert "USING COMPRESSION" not in _state_column_ddl()
    ingest_frame(universe.filter(pl.col("ts") <= days[301]))
    step = build_features()
    # moved in the build's transaction, every raw state read: each symbol streamed its new bar
    assert step.paths == {"stream": sorted(universe["symbol"].unique())}
    ddl = _state_column_ddl()
    assert "state BLOB USING COMPRESSION Uncompressed NOT NULL" in ddl
    assert {c for *_, c in _stored_states()} == {state_codec.CODEC}
    assert {s: n for s, (n, _) in _states().items()} == {s: 302 for s in states}
    with OfflineStore(read_only=True) as store:
        stored = [
            r[0]
            for r in store.con.sql(
                "SELECT symbol FROM feature_stream_state ORDER BY rowid"
            ).fetchall()
        ]
    assert stored == sorted(states, reverse=True)  # the old table's stored order
    streamed, streamed_states = _table(), _states()
    build_features(full=True)
    assert _table().equals(streamed)
    assert _states() == streamed_states


def test_revised_or_backfilled_bars_rebuild_only_that_symbol(qcli_home, universe):
    days = _days(universe)
    ingest_frame(universe.filter(pl.col("ts") <= days[399]))
    build_features()
    revised = universe.with_columns(
        pl.when((pl.col("symbol") == "SYM0001") & (pl.col("ts") == days[50]))
        .then(pl.col("close") * 1.001)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    # SYM0003 gets a bar back-filled before its first one: its history changed too
    backfill = revised.filter(pl.col("symbol") == "SYM0003").head(1)
    backfill = backfill.with_columns(pl.col("ts") - pl.duration(days=30))
    ingest_frame(pl.concat([revised, backfill]))
    result = build_features()
    assert result.paths == {
        "rewrite": ["SYM0001", "SYM0003"],
        "stream": ["SYM0000", "SYM0002", "SYM0004"],
    }
    assert result.symbols_rewritten == ["SYM0001", "SYM0003"]
    incremental = _table()
    build_features(full=True)
    assert _table().equals(incremental)


@pytest.mark.parametrize(
    "unusable",
    [
        "layout_sha256 = 'other'",  # written for another plan layout
        "state = state[1:100]",  # truncated
        "state_codec = 'lz77'",  # a codec this version does not know
    ],
)
def test_a_state_of_another_layout_or_engine_is_not_continued(qcli_home, universe, unusable):
    days = _days(universe)
    ingest_frame(universe.filter(pl.col("ts") <= days[300]))
    build_features()
    with OfflineStore() as store:
        store.con.execute(f"UPDATE feature_stream_state SET {unusable} WHERE symbol = 'SYM0002'")
    ingest_frame(universe)
    result = build_features()
    assert result.paths["recompute"] == ["SYM0002"]
    assert "SYM0002" not in result.paths["stream"]
    streamed = _table()
    build_features(full=True)
    assert _table().equals(streamed)
    # the polars engine stores no kernel state; the next kernel build cannot stream
    build_features(full=True, engine="polars")
    assert _states() == {}
    back = build_features(full=True, engine="kernel")
    assert back.paths == {"rewrite": sorted(universe["symbol"].unique())}
    assert len(_states()) == 5


def test_json_output_reports_the_path_of_every_symbol(qcli_home, universe):
    days = _days(universe)
    ingest_frame(universe.filter(pl.col("ts") <= days[300]))
    build_features()
    ingest_frame(universe)
    out = build_features().to_dict()
    assert out["paths"] == {"stream": sorted(universe["symbol"].unique())}
    assert out["rows_written"] == 5 * 119
    # only the new bars were computed
    assert out["rows_computed"] == 5 * 119
    assert np.isfinite(out["quality"]["features"]["rsi_14"]["mean"])
    from quantcli.features.inspect import describe_feature_set

    state = describe_feature_set()["table_status"]["stream_state"]
    plan = KernelPlan.of(load_feature_set("technical_v1"))
    stored = _stored_states()
    # the stored (Snappy) size, smaller than the raw vector: the ring buffers repeat the closes
    assert {c for *_, c in stored} == {state_codec.CODEC}
    assert (state["symbols"], state["bytes_per_symbol"]) == (
        5,
        max(len(b) for _, _, b, _ in stored),
    )
    assert state["bytes_per_symbol"] < 0.7 * 8 * plan.state_size


def test_a_revised_open_is_seen_by_the_history_hash(qcli_home, universe):
    from quantcli.features.hashing import input_sha256

    revised = universe.with_columns(
        pl.when((pl.col("symbol") == "SYM0004") & (pl.col("ts") == _days(universe)[10]))
        .then(pl.col("open") * 1.001)
        .otherwise(pl.col("open"))
        .alias("open")
    )
    assert input_sha256(revised) != input_sha256(universe)
    # the polars engine keeps no kernel state: its incremental build relies on the history hash
    ingest_frame(universe.filter(pl.col("ts") <= _days(universe)[300]))
    build_features(engine="polars")
    ingest_frame(revised)
    result = build_features(engine="polars")
    assert result.paths == {
        "recompute": ["SYM0000", "SYM0001", "SYM0002", "SYM0003"],
        "rewrite": ["SYM0004"],
    }


def test_a_history_hash_of_an_older_column_set_rebuilds_once(qcli_home, universe):
    days = _days(universe)
    ingest_frame(universe.filter(pl.col("ts") <= days[300]))
    build_features(engine="polars")
    with OfflineStore() as store:  # a store written when the hash left `open` out
        store.con.execute("UPDATE feature_build_state SET history_sha256 = 'f' || history_sha256")
    ingest_frame(universe)
    assert build_features(engine="polars").paths == {"rewrite": sorted(universe["symbol"].unique())}
    assert build_features(engine="polars").paths == {
        "recompute": sorted(universe["symbol"].unique())
    }
    incremental = _table()
    build_features(full=True, engine="polars")
    assert _table().equals(incremental)


def _kept_and_scanned() -> tuple[list, list]:
    from quantcli import resources

    with OfflineStore(read_only=True) as store:
        kept = store.con.execute(
            "SELECT symbol, n_bars, fp_sum, fp_xor FROM bar_fingerprints ORDER BY symbol"
        ).fetchall()
        scanned = store.con.execute(resources.sql("features_bar_fingerprints")).fetchall()
    return kept, scanned


def test_ingest_keeps_the_bar_fingerprints_a_scan_computes(qcli_home, universe):
    days = _days(universe)
    ingest_frame(universe.filter(pl.col("ts") <= days[200]))
    kept, scanned = _kept_and_scanned()
    assert kept == scanned and len(kept) == 5
    revised = universe.with_columns(
        pl.when((pl.col("symbol") == "SYM0002") & (pl.col("ts") == days[20]))
        .then(pl.col("open") * 1.01)
        .otherwise(pl.col("open"))
        .alias("open")
    )
    ingest_frame(revised.filter(pl.col("ts") <= days[250]))  # 1 revised, 49 new per symbol
    ingest_frame(revised.filter(pl.col("ts") <= days[250]))  # unchanged: nothing moves
    kept, scanned = _kept_and_scanned()
    assert kept == scanned
    assert [n for _, n, _, _ in kept] == [251] * 5
    # a store from before the table: the next ingest fingerprints every bar once
    with OfflineStore() as store:
        store.con.execute("DROP TABLE bar_fingerprints")
    ingest_frame(revised)
    kept, scanned = _kept_and_scanned()
    assert kept == scanned and [n for _, n, _, _ in kept] == [420] * 5


def test_bars_written_past_ingest_are_scanned_and_refingerprinted(qcli_home, universe):
    days = _days(universe)
    ingest_frame(universe.filter(pl.col("ts") <= days[300]))
    build_features()
    ingest_frame(universe)
    with OfflineStore() as store:  # a bar inserted without `qcli data ingest`
        store.con.execute(
            "INSERT INTO bars SELECT symbol, ts + INTERVAL 1000 DAY, open, high, low, close, "
            "volume FROM bars WHERE symbol = 'SYM0001' ORDER BY ts DESC LIMIT 1"
        )
    result = build_features()
    assert result.paths == {"stream": ["SYM0000", "SYM0001", "SYM0002", "SYM0003", "SYM0004"]}
    kept, scanned = _kept_and_scanned()
    assert kept == scanned and kept[1][1] == 421
    incremental = _table()
    build_features(full=True)
    assert _table().equals(incremental)


def test_the_layout_changes_with_the_kinds_code_and_only_with_it(tmp_path):
    """A stored state is continued only by the code that wrote it: an edit to any module of the
    kinds (a step helper here) changes the layout; one outside the kernels' code does not."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import quantcli

    code = (
        "import sys\n"
        "import quantcli\n"
        "assert quantcli.__file__.startswith(ROOT), quantcli.__file__  # the copy\n"
        "from quantcli.features import load_feature_set\n"
        "from quantcli.features.engine import KernelPlan\n"
        "print(KernelPlan.of(load_feature_set('technical_v1')).layout_sha256)\n"
    )

    def layout(root: Path) -> str:
        out = subprocess.run([sys.executable, "-c", code.replace("ROOT", repr(str(root)))],
                             capture_output=True, text=True, env={"PYTHONPATH": str(root)},
                             cwd=root, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    copy = tmp_path / "checkout"
    checkout = Path(quantcli.__file__).parents[1]
    for part in ("quantcli", "feature_defs", "sql"):
        shutil.copytree(checkout / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    here = KernelPlan.of(load_feature_set("technical_v1")).layout_sha256
    assert layout(copy) == here  # same bytes elsewhere: same layout
    with open(copy / "quantcli" / "features" / "build.py", "a") as fh:
        fh.write("\n# not kernel code\n")
    assert layout(copy) == here
    with open(copy / "quantcli" / "features" / "kinds" / "_steps.py", "a") as fh:
        fh.write("\n# a step helper edited\n")
    assert layout(copy) != here
