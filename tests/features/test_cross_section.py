"""Cross-sectional kinds with the kernel engine: the post-stage over every symbol's stored rows
at each timestamp a build touches, against an oracle, the polars engine, a full rebuild
(incremental builds with symbols arriving at different times) and FeatureStream."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import InputError
from quantcli.features import load_feature_set
from quantcli.features.build import build_features
from quantcli.features.compute import compute_features
from quantcli.features.cross_section_stage import CrossFeature, compute_cross_section
from quantcli.features.definitions import parse_feature_set
from quantcli.features.stream import FeatureStream
from quantcli.store.offline import OfflineStore

TABLE = "desk_cs_features_v1"
CS_SET = f"""[feature_set]
name = "desk_cs"
version = 1
table = "{TABLE}"
frequency = "1d"

[[features]]
name = "rsi_14"
kind = "rsi"
params = {{ window = 14 }}

[[features]]
name = "willr_5"
kind = "willr"
params = {{ window = 5 }}

[[features]]
name = "mom_5"
kind = "mom"
params = {{ window = 5 }}

[[features]]
name = "mom_5_z"
kind = "zscore"
params = {{ of = "mom_5", window = 10 }}

[[features]]
name = "rsi_rank"
kind = "cs_rank"
params = {{ of = "rsi_14" }}

[[features]]
name = "willr_rank"
kind = "cs_rank"
params = {{ of = "willr_5" }}

[[features]]
name = "mom_z_cs"
kind = "cs_zscore"
params = {{ of = "mom_5_z" }}

[[features]]
name = "willr_cs_z"
kind = "cs_zscore"
params = {{ of = "willr_5" }}
"""
CROSS = ("rsi_rank", "willr_rank", "mom_z_cs", "willr_cs_z")


@pytest.fixture(scope="module")
def universe() -> pl.DataFrame:
    """6 symbols x 300 days, ragged: SYM0005 starts 9 days late (its warm-up overlaps the others'
    first kept rows), SYM0002 stops 40 days early, the last 12 days hold SYM0000 alone (a
    single-symbol cross-section); flat stretches make ties."""
    bars = synthetic_universe(6, 300, seed=5)
    days = bars["ts"].unique().sort()
    flat = (pl.col("symbol").is_in(["SYM0003", "SYM0004"])) & pl.col("ts").is_between(
        days[100], days[130]
    )
    price = pl.lit(50.0)
    bars = bars.with_columns(
        *(
            pl.when(flat).then(price).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        )
    )
    keep = (
        ((pl.col("symbol") == "SYM0000") | (pl.col("ts") < days[288]))
        & ((pl.col("symbol") != "SYM0002") | (pl.col("ts") < days[260]))
        & ((pl.col("symbol") != "SYM0005") | (pl.col("ts") >= days[9]))  # in warm-up meanwhile
    )
    return bars.filter(keep)


@pytest.fixture
def desk(qcli_home):
    defs = qcli_home / "feature_defs"
    defs.mkdir()
    (defs / "desk_cs_v1.toml").write_text(CS_SET)
    return load_feature_set("desk_cs_v1")


def _table() -> pl.DataFrame:
    with OfflineStore(read_only=True) as store:
        return store.con.sql(f"SELECT * FROM {TABLE} ORDER BY symbol, ts").pl()


def _oracle(values: np.ndarray, groups: np.ndarray, mode: int) -> np.ndarray:
    """The declared semantics, written directly: NaN is undefined; average rank of ties."""
    out = np.full(values.shape, np.nan)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        ok = idx[~np.isnan(values[idx])]
        x = values[ok]
        m = x.size
        for i in ok:
            v = values[i]
            if mode == 0:
                r = (x < v).sum() + ((x == v).sum() + 1) / 2
                out[i] = 0.5 if m == 1 else (r - 1) / (m - 1)
            else:
                std = x.std()
                out[i] = 0.0 if m == 1 or std < 1e-8 else (v - x.mean()) / std
    return out


def test_the_stage_matches_the_declared_semantics():
    rng = np.random.default_rng(3)
    n = 400
    groups = np.sort(rng.integers(0, 60, n))
    values = rng.choice([1.0, 2.0, 2.0, 3.5, np.nan, -1.0], n) + np.where(
        rng.random(n) < 0.3, rng.normal(size=n), 0.0
    )
    values[groups == groups[0]] = 7.0  # a timestamp of equal values (std 0, all tied)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "symbol": [f"S{i:03d}" for i in range(n)],
            "ts": [t0.replace(day=1 + int(g) % 28, month=1 + int(g) // 28) for g in groups],
            "x": values,
        }
    )
    done = compute_cross_section(frame, [CrossFeature("r", "x", 0), CrossFeature("z", "x", 1)])
    order = frame.sort("ts", "symbol")
    g = order["ts"].to_physical().to_numpy()
    v = order["x"].to_numpy()
    np.testing.assert_array_equal(done["r"].to_numpy(), _oracle(v, g, 0))
    np.testing.assert_allclose(done["z"].to_numpy(), _oracle(v, g, 1), rtol=1e-12, atol=1e-15)
    assert set(done.filter(pl.col("ts") == order["ts"][0])["z"].to_list()) == {0.0}
    # a single-symbol timestamp: rank 0.5, z-score 0
    single = [k for k in np.unique(g) if (g == k).sum() == 1 and not np.isnan(v[g == k][0])]
    assert single
    row = done.filter(pl.col("ts").to_physical() == int(single[0]))
    assert (row["r"][0], row["z"][0]) == (0.5, 0.0)


def test_kernel_build_in_shards_equals_the_polars_engine(desk, universe, monkeypatch):
    from quantcli.features import cross_section_stage

    monkeypatch.setattr(cross_section_stage, "CHUNK_ROWS", 100)  # the post-stage in chunks
    ingest_frame(universe)
    build = build_features(feature_set="desk_cs_v1", shard_rows=500)  # several shards
    assert build.quality["non_finite"] == 0
    table = _table()
    assert table.height == universe.height - 6 * desk.warmup
    expected = compute_features(universe, "desk_cs_v1", engine="polars").sort("symbol", "ts")
    assert table.select("symbol", "ts").equals(expected.select("symbol", "ts"))
    for name in desk.feature_names:
        np.testing.assert_allclose(
            table[name].to_numpy(),
            expected[name].to_numpy(),
            rtol=1e-12,
            atol=1e-12,
            err_msg=name,
        )
    # the in-memory kernel engine computes the same bytes as the sharded build
    assert compute_features(universe, "desk_cs_v1").sort("symbol", "ts").equals(table)
    last = table.filter(pl.col("ts") == table["ts"].max())
    assert last["symbol"].to_list() == ["SYM0000"]
    assert (last["rsi_rank"][0], last["mom_z_cs"][0]) == (0.5, 0.0)
    ranks = table.group_by("ts").agg(pl.col("willr_rank").sort()).sort("ts")["willr_rank"]
    assert any(len(set(r)) < len(r) for r in ranks.to_list())  # ties share an average rank


def test_incremental_builds_with_staggered_symbols_equal_a_full_rebuild(
    desk, universe, monkeypatch
):
    from quantcli.features import cross_section_stage

    monkeypatch.setattr(cross_section_stage, "CHUNK_ROWS", 100)
    days = universe["ts"].unique().sort()
    early = pl.col("symbol").is_in(["SYM0000", "SYM0001"])
    stages = [
        pl.col("ts") <= days[150],
        (pl.col("ts") <= days[150]) | (early & (pl.col("ts") <= days[170])),
        (pl.col("ts") <= days[175]) | (early & (pl.col("ts") <= days[180])),
        (pl.col("ts") <= days[176]),  # nothing new for the early symbols
        pl.lit(True),
    ]
    paths = []
    for keep in stages:
        ingest_frame(universe.filter(keep))
        paths.append(build_features(feature_set="desk_cs_v1", shard_rows=700).paths)
    assert "stream" in paths[1] and "stream" in paths[-1]
    incremental = _table()
    full = build_features(feature_set="desk_cs_v1", full=True)
    rebuilt = _table()
    assert rebuilt.equals(incremental)  # bit for bit, cross-sectional columns included
    assert full.quality == build_features(feature_set="desk_cs_v1", full=True).quality


def test_revised_bars_since_and_symbols_builds_equal_a_full_rebuild(desk, universe):
    days = universe["ts"].unique().sort()
    ingest_frame(universe)
    build_features(feature_set="desk_cs_v1")
    later = (pl.col("symbol") == "SYM0003") & (pl.col("ts") >= days[150])
    revised = universe.with_columns(  # prices scaled from day 150 on: a revised history
        pl.when(later).then(pl.col(c) * 1.01).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low", "close")
    )
    ingest_frame(revised)
    step = build_features(feature_set="desk_cs_v1")
    assert step.paths["rewrite"] == ["SYM0003"]
    after_rewrite = _table()
    build_features(feature_set="desk_cs_v1", since=days[200].date())
    after_since = _table()
    build_features(feature_set="desk_cs_v1", symbols=["SYM0001"], full=True)
    after_symbols = _table()
    build_features(feature_set="desk_cs_v1", full=True)
    rebuilt = _table()
    assert after_rewrite.equals(rebuilt)
    assert after_since.equals(rebuilt)
    assert after_symbols.equals(rebuilt)
    # the revision moved other symbols' ranks: the post-stage rewrote their rows too
    with OfflineStore() as store:
        store.con.execute(f"UPDATE {TABLE} SET rsi_rank = -1")
    build_features(feature_set="desk_cs_v1", symbols=["SYM0003"], full=True)
    touched = _table().filter(pl.col("rsi_rank") != -1)
    assert set(touched["symbol"]) == set(universe["symbol"])  # every symbol at SYM0003's ts
    assert set(touched["ts"]) == set(rebuilt.filter(pl.col("symbol") == "SYM0003")["ts"])


def test_feature_stream_ranks_against_the_stored_rows(desk, universe):
    days = universe["ts"].unique().sort()
    late = pl.col("symbol").is_in(["SYM0001", "SYM0004"])
    # the other symbols' bars through day 203 are built; the late two stop at day 200
    ingest_frame(
        universe.filter((pl.col("ts") <= days[200]) | (~late & (pl.col("ts") <= days[203])))
    )
    build_features(feature_set="desk_cs_v1")
    new = universe.filter(late & pl.col("ts").is_between(days[201], days[203]))
    with OfflineStore(read_only=True) as store:
        rows = FeatureStream("desk_cs_v1", store=store).update(new)
    ingest_frame(universe.filter(pl.col("ts") <= days[203]))
    build_features(feature_set="desk_cs_v1")
    expected = _table().filter(late & (pl.col("ts") >= days[201]))
    assert rows.height == 6
    # ranked among the given rows and the stored rows at their ts: the build's bytes
    assert rows.sort("symbol", "ts").equals(expected)
    # the stored rows took part: ranked among themselves, the two would only rank 0 and 1
    alone = compute_cross_section(rows.drop(*CROSS), [CrossFeature("r", "rsi_14", 0)])
    assert sorted(set(alone["r"].to_list())) == [0.0, 1.0]
    assert len(set(rows["rsi_rank"].to_list()) - {0.0, 1.0}) > 0


def test_a_feature_reading_a_cross_sectional_feature_is_refused(tmp_path):
    path = tmp_path / "bad_v1.toml"
    lag = '[[features]]\nname = "rank_lag"\nkind = "lag"\nparams = { of = "rsi_rank", periods = 1 }'
    path.write_text(CS_SET.replace('name = "desk_cs"', 'name = "bad"') + "\n" + lag + "\n")
    fs = parse_feature_set(path)
    bars = synthetic_universe(2, 60, seed=1)
    with pytest.raises(InputError, match="'rank_lag' reads 'rsi_rank', a cross-sectional"):
        compute_features_of(fs, bars)


def compute_features_of(fs, bars):
    from quantcli.features.compute import block_starts, compile_plan, compute_sorted, sort_bars

    srt = sort_bars(bars)
    return compute_sorted(srt, compile_plan(fs), block_starts(srt)[0])


SMALL_SET = """[feature_set]
name = "desk_small"
version = 1
table = "desk_small_features_v1"
frequency = "1d"

[[features]]
name = "rsi_3"
kind = "rsi"
params = { window = 3 }

[[features]]
name = "rsi_rank"
kind = "cs_rank"
params = { of = "rsi_3" }

[[features]]
name = "rsi_cs_z"
kind = "cs_zscore"
params = { of = "rsi_3" }
"""


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.lists(st.integers(0, 40), min_size=4, max_size=4), min_size=1, max_size=3))
def test_any_arrival_order_of_new_bars_equals_a_full_rebuild(tmp_path_factory, monkeypatch, cuts):
    """Each step ingests every symbol's bars up to its own cut (cuts only grow), then builds."""
    home = tmp_path_factory.mktemp("home")
    (home / "feature_defs").mkdir()
    (home / "feature_defs" / "desk_small_v1.toml").write_text(SMALL_SET)
    monkeypatch.setenv("QCLI_HOME", str(home))
    bars = synthetic_universe(4, 50, seed=len(cuts))
    days = bars["ts"].unique().sort()
    symbols = sorted(bars["symbol"].unique())
    reached = [5] * 4  # every symbol starts with 6 bars
    for step in [*cuts, [49] * 4]:
        reached = [max(r, c) for r, c in zip(reached, step, strict=True)]
        keep = pl.any_horizontal(
            (pl.col("symbol") == s) & (pl.col("ts") <= days[r])
            for s, r in zip(symbols, reached, strict=True)
        )
        ingest_frame(bars.filter(keep))
        build_features(feature_set="desk_small_v1")
    with OfflineStore(read_only=True) as store:
        incremental = store.con.sql("SELECT * FROM desk_small_features_v1 ORDER BY ALL").pl()
    build_features(feature_set="desk_small_v1", full=True)
    with OfflineStore(read_only=True) as store:
        rebuilt = store.con.sql("SELECT * FROM desk_small_features_v1 ORDER BY ALL").pl()
    assert rebuilt.height == 4 * (50 - 3)
    assert incremental.equals(rebuilt)
