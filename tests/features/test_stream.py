"""FeatureStream: rows for new bars from stored or in-memory state, equal to the batch build."""

from __future__ import annotations

import polars as pl
import pytest

from quantcli.data.ingest import ingest_frame
from quantcli.data.synthetic import synthetic_universe
from quantcli.errors import InputError
from quantcli.features import compute_features
from quantcli.features.build import build_features
from quantcli.features.stream import FeatureStream
from quantcli.store.offline import OfflineStore


def test_replaying_the_bundled_sample_bar_by_bar_equals_the_batch_build():
    from quantcli.data import load_sample

    sample = load_sample()
    batch = compute_features(sample)
    stream = FeatureStream("technical_v1")
    parts = []
    # every timestamp once, all symbols of that timestamp in one update: each step's rows
    # must be exactly the batch rows of that timestamp
    for (ts,), bars in sample.sort("ts").group_by("ts", maintain_order=True):
        rows = stream.update(bars)
        expected = batch.filter(pl.col("ts") == ts)
        assert rows.equals(expected), ts
        parts.append(rows)
    assert pl.concat(parts).sort("symbol", "ts").equals(batch)


def test_a_stream_continues_from_the_states_a_build_stored(qcli_home):
    bars = synthetic_universe(3, 320, seed=8)
    days = bars["ts"].unique().sort()
    ingest_frame(bars.filter(pl.col("ts") <= days[299]))
    build_features()
    with OfflineStore(read_only=True) as store:
        stream = FeatureStream("technical_v1", store=store)
    assert stream.symbols == ["SYM0000", "SYM0001", "SYM0002"]
    assert stream.bars_seen("SYM0001") == 300
    rows = stream.update(bars.filter(pl.col("ts") > days[299]))
    expected = compute_features(bars).filter(pl.col("ts") > days[299])
    assert rows.equals(expected)


def test_a_bar_not_after_the_last_one_is_refused_and_changes_nothing():
    bars = synthetic_universe(2, 260, seed=3)
    days = bars["ts"].unique().sort()
    stream = FeatureStream()
    stream.update(bars.filter(pl.col("ts") <= days[249]))
    before = stream.state("SYM0001")
    late = bars.filter(pl.col("ts") == days[249])  # already seen
    with pytest.raises(InputError, match=r"symbol SYM0000, ts .* is not after"):
        stream.update(late)
    assert stream.state("SYM0001").tobytes() == before.tobytes()
    assert stream.bars_seen("SYM0000") == 250
    rows = stream.update(bars.filter(pl.col("ts") > days[249]))
    assert rows.equals(compute_features(bars).filter(pl.col("ts") > days[249]))


def test_empty_update_returns_the_feature_columns():
    out = FeatureStream().update(synthetic_universe(1, 5, seed=1).head(0))
    assert out.height == 0 and out.columns[:3] == ["symbol", "ts", "nma_9"]


def test_one_symbol_bar_by_bar_takes_the_fast_path_and_equals_the_batch_build(monkeypatch):
    from quantcli.features import stream as stream_mod

    bars = synthetic_universe(1, 230, seed=12)
    general = []
    real = stream_mod.sort_bars
    monkeypatch.setattr(stream_mod, "sort_bars", lambda b: general.append(1) or real(b))
    stream = FeatureStream()
    rows = pl.concat([stream.update(bars.slice(i, 1)) for i in range(bars.height)])
    assert general == []  # every update was one in-order bar of one symbol
    assert rows.equals(compute_features(bars))
    # out of order or several symbols: the general path, same rows
    two = synthetic_universe(2, 230, seed=12)
    again = FeatureStream()
    assert again.update(two.reverse()).equals(compute_features(two))
    assert general == [1]


def test_a_user_set_with_features_of_features_streams_like_the_batch_build(tmp_path, monkeypatch):
    (tmp_path / "stream_user_v1.toml").write_text(
        '[feature_set]\nname = "stream_user"\nversion = 1\ntable = "stream_user_features_v1"\n'
        '[[features]]\nname = "rsi_14"\nkind = "rsi"\nparams = { window = 14 }\n'
        '[[features]]\nname = "ema_10"\nkind = "ema"\nparams = { window = 10 }\n'
        '[[features]]\nname = "rsi_lag"\nkind = "lag"\nparams = { of = "rsi_14", periods = 3 }\n'
        '[[features]]\nname = "rsi_z"\nkind = "zscore"\nparams = { of = "rsi_lag", window = 20 }\n'
        '[[features]]\nname = "ratio_x"\nkind = "ratio"\n'
        'params = { of = "rsi_14", other = "ema_10" }\n'
    )
    monkeypatch.setenv("QCLI_FEATURE_DEFS", str(tmp_path))
    from quantcli.features import load_feature_set

    fs = load_feature_set("stream_user_v1")
    assert fs.warmup == 36  # rsi 14 + lag 3 + zscore 19: inputs' warm-up comes first
    bars = synthetic_universe(2, 120, seed=1)
    batch = compute_features(bars, "stream_user_v1")
    stream = FeatureStream(fs)
    parts = [stream.update(g) for _, g in bars.sort("ts").group_by("ts", maintain_order=True)]
    assert pl.concat(parts).sort("symbol", "ts").equals(batch)
