"""The feature engine of a build: recorded in ``feature_builds``, never mixed in one table.

Design under test (``quantcli.features.build``): the engine is build provenance, not part of the
feature version (the table stays ``technical_features_v1``); a table holds one engine's bytes,
so a build with the other engine must rewrite every symbol (``full``, unscoped), else exit 2
and nothing changes.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import InputError
from quantcli.features import compute_features
from quantcli.features.build import build_features
from quantcli.store.offline import OfflineStore

TABLE = "technical_features_v1"

# feature_builds as created before the engine was recorded (quantcli 0.x, schema_features.sql)
OLD_FEATURE_BUILDS = """
CREATE TABLE feature_builds (
    build_id VARCHAR PRIMARY KEY, built_at TIMESTAMP WITH TIME ZONE NOT NULL,
    feature_set VARCHAR NOT NULL, feature_version INTEGER NOT NULL, table_name VARCHAR NOT NULL,
    mode VARCHAR NOT NULL, input_sha256 VARCHAR NOT NULL, symbols VARCHAR NOT NULL,
    bars_read BIGINT NOT NULL, rows_computed BIGINT NOT NULL, rows_written BIGINT NOT NULL,
    rows_deleted BIGINT NOT NULL, warmup_rows_dropped BIGINT NOT NULL, quality VARCHAR NOT NULL,
    timings VARCHAR NOT NULL, executor VARCHAR NOT NULL, quantcli_version VARCHAR NOT NULL
)
"""


@pytest.fixture(scope="module")
def universe() -> pl.DataFrame:
    return synthetic_universe(3, 320, seed=5)


def _table() -> pl.DataFrame:
    with OfflineStore(read_only=True) as store:
        return store.con.sql(f"SELECT * FROM {TABLE} ORDER BY symbol, ts").pl()


def _builds() -> list[tuple]:
    with OfflineStore(read_only=True) as store:
        return store.con.execute(
            "SELECT engine, mode, rows_written, rows_deleted, build_id FROM feature_builds "
            "ORDER BY built_at"
        ).fetchall()


def test_switching_engine_needs_a_full_rebuild_and_is_recorded(qcli_home, universe):
    days = universe["ts"].unique().sort()
    ingest_frame(universe.filter(pl.col("ts") <= days[299]))
    first = build_features()
    assert (first.engine, first.previous_engine) == ("kernel", None)
    kernel_rows = _table()

    # every partial build with the other engine is refused, and changes nothing
    ingest_frame(universe)  # 20 new bars per symbol: an incremental build would append
    for kwargs, what in (
        ({}, "an incremental build"),
        ({"since": days[310].date().isoformat()}, "a --since build"),
        ({"full": True, "symbols": ["SYM0001"]}, "a --symbols build"),
    ):
        with pytest.raises(InputError) as exc:
            build_features(engine="polars", **kwargs)
        assert str(exc.value) == (
            f"--engine polars: {TABLE} holds rows built by engine kernel; "
            f"{what} would mix the two engines' values in one table"
        )
        assert exc.value.exit_code == 2
        assert "qcli features build --full --engine polars" in exc.value.hint
    assert _table().equals(kernel_rows)
    assert len(_builds()) == 1

    full = build_features(engine="polars", full=True)
    assert (full.engine, full.previous_engine, full.mode) == ("polars", "kernel", "full")
    assert full.rows_deleted == kernel_rows.height
    polars_rows = _table()
    assert polars_rows.equals(compute_features(universe, engine="polars"))
    assert polars_rows.height == 3 * (320 - 199)

    # same key set as the kernel engine's; values within rtol 1e-9 but not the same bytes,
    # which is why the table may not mix the two
    kernel_now = compute_features(universe, engine="kernel")
    assert polars_rows.select("symbol", "ts").equals(kernel_now.select("symbol", "ts"))
    a = polars_rows.drop("symbol", "ts").to_numpy()
    b = kernel_now.drop("symbol", "ts").to_numpy()
    floor = 1e-10 * np.abs(b).max(axis=0)
    assert np.all(np.abs(a - b) <= 1e-9 * np.abs(b) + floor)
    assert not np.array_equal(a, b)

    # the same engine again is incremental as usual
    again = build_features(engine="polars")
    assert (again.rows_written, again.rows_deleted, again.previous_engine) == (0, 0, "polars")
    with pytest.raises(InputError, match="holds rows built by engine polars"):
        build_features()  # the default engine (kernel) over polars rows

    builds = _builds()
    assert [(e, m, w, d) for e, m, w, d, _ in builds] == [
        ("kernel", "incremental", 3 * (300 - 199), 0),
        ("polars", "full", 3 * (320 - 199), 3 * (300 - 199)),
        ("polars", "incremental", 0, 0),
    ]
    assert len({b[-1] for b in builds}) == 3


def test_an_emptied_table_takes_any_engine(qcli_home, universe):
    ingest_frame(universe)
    build_features()
    with OfflineStore() as store:
        store.con.execute(f"DELETE FROM {TABLE}")
    result = build_features(engine="polars")  # nothing stored to mix with
    assert (result.previous_engine, result.rows_written) == (None, 3 * (320 - 199))
    assert _table().equals(compute_features(universe, engine="polars"))


def test_unknown_engine_is_refused_before_any_work(qcli_home, universe):
    ingest_frame(universe)
    with pytest.raises(InputError, match=r"`engine` must be one of kernel, polars"):
        build_features(engine="numpy")
    with OfflineStore(read_only=True) as store:
        assert not store.table_exists("feature_builds")


def test_an_old_store_is_migrated_and_its_builds_count_as_kernel(qcli_home, universe):
    ingest_frame(universe)
    build_features()
    with OfflineStore() as store:  # rewrite feature_builds in the shape it had before engines
        con = store.con
        con.execute("CREATE TABLE old AS SELECT * EXCLUDE (engine) FROM feature_builds")
        con.execute("DROP TABLE feature_builds")
        con.execute(OLD_FEATURE_BUILDS)
        # only the old shape's columns (later columns, such as the declaration's, did not exist)
        cols = ", ".join(r[0] for r in con.execute("DESCRIBE feature_builds").fetchall())
        con.execute(f"INSERT INTO feature_builds SELECT {cols} FROM old")
        con.execute("DROP TABLE old")
    # read-only views work on the old shape, before any build migrates it
    from quantcli.features.inspect import describe_feature_set, recent_builds

    assert describe_feature_set()["table_status"]["last_build"]["engine"] == "kernel"
    assert [b["engine"] for b in recent_builds()] == ["kernel"]
    with pytest.raises(InputError, match="holds rows built by engine kernel"):
        build_features(engine="polars")
    with OfflineStore(read_only=True) as store:  # the refused build rolled its migration back
        cols = [r[0] for r in store.con.execute("DESCRIBE feature_builds").fetchall()]
    assert "engine" not in cols

    build_features()  # migrates: the old row gets engine 'kernel', the new row too
    with OfflineStore(read_only=True) as store:
        cols = [r[0] for r in store.con.execute("DESCRIBE feature_builds").fetchall()]
    assert "engine" in cols
    assert [b[0] for b in _builds()] == ["kernel", "kernel"]
    build_features(engine="polars", full=True)
    assert [b[0] for b in _builds()] == ["kernel", "kernel", "polars"]


def test_cli_engine_option_json_human_and_refusal(qcli_home, qcli):
    ingest_frame(synthetic_universe(2, 230, seed=4))
    code, out, _ = qcli("features", "build", "--json")
    assert code == 0
    assert (json.loads(out)["engine"], json.loads(out)["previous_engine"]) == ("kernel", None)

    code, _, err = qcli("features", "build", "--engine", "polars")
    assert code == 2
    assert "--engine polars: technical_features_v1 holds rows built by engine kernel" in err

    code, out, _ = qcli("features", "build", "--engine", "polars", "--full", "--json")
    result = json.loads(out)
    assert code == 0
    assert (result["engine"], result["previous_engine"], result["mode"]) == (
        "polars", "kernel", "full",
    )  # fmt: skip

    code, out, _ = qcli("features", "build", "--engine", "polars")
    assert code == 0
    assert "engine" in out and "polars" in out and "replaced engine" not in out

    code, _, err = qcli("features", "build", "--engine", "numpy")
    # refused by the option parser: the option, the bad value and the choices, exit 2
    assert code == 2 and "--engine" in err and "'numpy'" in err
    assert "kernel" in err and "polars" in err

    code, out, _ = qcli("features", "build", "--help")
    text = " ".join(out.replace("│", " ").split())  # rich wraps the help in a box
    assert code == 0 and "kernel = Numba kernels, bit-identical to TA-Lib" in text
    assert "polars = native Polars expressions, the readable reference" in text


def test_stored_engine_lets_the_pipeline_extend_a_polars_table(qcli_home, universe):
    """``qcli pipeline run`` builds with the engine of the rows already stored: after a full
    polars rebuild its incremental build is accepted (a kernel one would be refused)."""
    from quantcli.features.inspect import stored_engine

    assert stored_engine() is None  # no store yet
    ingest_frame(universe.filter(pl.col("ts") < pl.col("ts").max()))
    build_features()
    assert stored_engine() == "kernel"
    build_features(engine="polars", full=True)
    assert stored_engine() == "polars"
    ingest_frame(universe)  # one new bar per symbol
    with pytest.raises(InputError, match="holds rows built by engine polars"):
        build_features()
    result = build_features(engine=stored_engine())
    assert (result.engine, result.rows_written) == ("polars", 3)
    assert _table().equals(compute_features(universe, engine="polars"))
    with OfflineStore() as store:
        store.con.execute(f"DELETE FROM {TABLE}")
    assert stored_engine() is None  # an empty table takes either engine
