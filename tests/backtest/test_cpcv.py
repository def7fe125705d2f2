"""CombinatorialPurgedCV: exact index sets, guards, and properties against a plain reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcli.backtest import CombinatorialPurgedCV
from quantcli.errors import InputError


def reference_split(ts, label_end, n_groups, n_test_groups, embargo_pct, purge_pct):
    """The textbook definition, row by row and O(n^2): the oracle for the Numba kernels."""
    ts = [int(t) for t in ts]
    le = [int(e) for e in label_end]
    uniq = sorted(set(ts))
    upos = {t: i for i, t in enumerate(uniq)}
    group_of_u = np.concatenate(
        [np.full(len(a), g) for g, a in enumerate(np.array_split(np.arange(len(uniq)), n_groups))]
    )
    group = [int(group_of_u[upos[t]]) for t in ts]
    purge_n = math.ceil(round(purge_pct * len(uniq), 9))
    embargo_n = math.ceil(round(embargo_pct * len(uniq), 9))
    out = []
    for combo in itertools.combinations(range(n_groups), n_test_groups):
        test = [i for i in range(len(ts)) if group[i] in combo]
        blocks = []  # (first unique index, last unique index) of each run of test groups
        for g in combo:
            us = [u for u in range(len(uniq)) if group_of_u[u] == g]
            if blocks and blocks[-1][2] == g - 1:
                blocks[-1] = (blocks[-1][0], us[-1], g)
            else:
                blocks.append((us[0], us[-1], g))
        train = []
        for i in range(len(ts)):
            if group[i] in combo:
                continue
            u = upos[ts[i]]
            overlap = any(ts[i] <= le[j] and ts[j] <= le[i] for j in test)
            in_gap = any(lo - purge_n <= u < lo for lo, _, _ in blocks)
            in_embargo = any(hi < u <= hi + embargo_n for _, hi, _ in blocks)
            if not (overlap or in_gap or in_embargo):
                train.append(i)
        out.append((train, test))
    return out


def splits_as_lists(cv, n, **kw):
    return [(tr.tolist(), te.tolist()) for tr, te in cv.split(np.zeros((n, 1)), **kw)]


# -- exact, hand-checked index sets ------------------------------------------------------------


def test_single_asset_purge_and_embargo_at_both_ends():
    # 10 bars, groups of 2 bars, labels end one bar later, embargo 1 bar
    ts = np.arange(10)
    cv = CombinatorialPurgedCV(n_groups=5, n_test_groups=2, embargo_pct=0.1)
    splits = splits_as_lists(cv, 10, timestamps=ts, label_end=ts + 1)
    got = dict(zip(cv.test_groups, splits, strict=True))
    # test at the start: bar 4 starts inside the label of bar 3 (and is embargoed)
    assert got[(0, 1)] == ([5, 6, 7, 8, 9], [0, 1, 2, 3])
    # test at both ends: bar 2 purged+embargoed after G0, bar 7's label reaches bar 8
    assert got[(0, 4)] == ([3, 4, 5, 6], [0, 1, 8, 9])
    # two separate blocks in the middle
    assert got[(1, 3)] == ([0, 9], [2, 3, 6, 7])
    # test at the end: only the purge before, nothing after
    assert got[(3, 4)] == ([0, 1, 2, 3, 4], [6, 7, 8, 9])
    assert all(len(te) == 4 for _, te in got.values())


def test_purge_gap_and_embargo_without_label_end():
    # 15 bars, groups of 3 bars, a 1-bar gap before and a 1-bar embargo after each test block
    cv = CombinatorialPurgedCV(n_groups=5, n_test_groups=2, embargo_pct=1 / 15, purge_pct=1 / 15)
    got = dict(zip(cv.test_groups, splits_as_lists(cv, 15), strict=True))
    assert got[(1, 3)] == ([0, 1, 7, 13, 14], [3, 4, 5, 9, 10, 11])
    assert got[(0, 4)] == ([4, 5, 6, 7, 8, 9, 10], [0, 1, 2, 12, 13, 14])
    plain = CombinatorialPurgedCV(n_groups=5, n_test_groups=2, embargo_pct=0.0)
    got = dict(zip(plain.test_groups, splits_as_lists(plain, 10), strict=True))
    assert got[(1, 3)] == ([0, 1, 4, 5, 8, 9], [2, 3, 6, 7])


def test_panel_with_repeated_timestamps_never_splits_a_timestamp():
    # two symbols per timestamp (rows sorted by ts, then symbol); A's labels span 1 bar, B's 2
    ts = np.repeat(np.arange(6), 2)
    label_end = ts + np.tile([1, 2], 6)
    cv = CombinatorialPurgedCV(n_groups=3, n_test_groups=1, embargo_pct=0.01)
    got = splits_as_lists(cv, 12, timestamps=ts, label_end=label_end)
    assert got[0] == ([8, 9, 10, 11], [0, 1, 2, 3])  # ts 2,3 start inside B's label at ts 1
    assert got[1] == ([0], [4, 5, 6, 7])  # before: ts0-B, ts1-A/B reach ts 2; after: all of 4,5
    assert got[2] == ([0, 1, 2, 3, 4], [8, 9, 10, 11])  # ts2-A (ends 3) kept, ts2-B (ends 4) not
    groups = cv.sample_groups(np.zeros(12), timestamps=ts)
    assert groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]


def test_datetimes_and_polars_columns():
    ts = pl.datetime_range(
        pl.datetime(2024, 1, 1, time_zone="UTC"),
        pl.datetime(2024, 1, 10, time_zone="UTC"),
        "1d",
        eager=True,
    )
    frame = pl.DataFrame({"ts": ts, "label_end": ts.dt.offset_by("1d"), "x": np.arange(10.0)})
    cv = CombinatorialPurgedCV(n_groups=5, n_test_groups=2, embargo_pct=0.1)
    from_frame = [(a.tolist(), b.tolist()) for a, b in cv.split(frame)]
    bars = np.arange(10)
    assert from_frame == splits_as_lists(cv, 10, timestamps=bars, label_end=bars + 1)
    as_numpy = [
        (a.tolist(), b.tolist())
        for a, b in cv.split(frame, timestamps=ts.to_numpy(), label_end=frame["label_end"])
    ]
    assert as_numpy == from_frame


def test_array_split_convention_on_unique_timestamps():
    cv = CombinatorialPurgedCV(n_groups=3, n_test_groups=1, embargo_pct=0.0)
    ts = np.repeat(np.arange(7), [1, 3, 1, 1, 2, 1, 1])  # 7 unique -> groups of 3, 2, 2
    assert cv.sample_groups(np.zeros(10), timestamps=ts).tolist() == [0] * 5 + [1] * 3 + [2] * 2


def test_paths_recombine_and_counts():
    cv = CombinatorialPurgedCV(n_groups=4, n_test_groups=2)
    assert cv.get_n_splits() == 6 and cv.n_paths == 3
    assert cv.path_splits().tolist() == [[0, 0, 1, 2], [1, 3, 3, 4], [2, 4, 5, 5]]
    assert cv.path_ids().tolist() == [[0, 0], [1, 0], [2, 0], [1, 1], [2, 1], [2, 2]]
    big = CombinatorialPurgedCV(n_groups=10, n_test_groups=2)
    assert big.get_n_splits() == 45 and big.n_paths == 9 == 2 * 45 // 10


def test_cross_val_score_compatible():
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X @ [1.0, -2.0, 0.5] + rng.normal(scale=0.1, size=200)
    scores = cross_val_score(LinearRegression(), X, y, cv=CombinatorialPurgedCV(6, 2))
    assert scores.shape == (15,) and scores.min() > 0.9


# -- guards ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_groups": 1}, "`n_groups` must be an integer of at least 2, got `n_groups=1`"),
        ({"n_groups": 5, "n_test_groups": 5}, r"`n_test_groups` must be .* \[1, 4\]"),
        ({"n_test_groups": 0}, "got `n_test_groups=0`"),
        ({"embargo_pct": 1.5}, "`embargo_pct` must be a fraction in \\[0, 1\\), got"),
        ({"purge_pct": -0.1}, "`purge_pct=-0.1`"),
        ({"n_groups": 30, "n_test_groups": 10}, "30045015 splits, more than the limit"),
    ],
)
def test_parameter_errors_name_the_parameter(kwargs, match):
    with pytest.raises(InputError, match=match):
        CombinatorialPurgedCV(**kwargs)


def test_input_guards():
    cv = CombinatorialPurgedCV(n_groups=5, n_test_groups=2, embargo_pct=0.1)
    X = np.zeros((10, 1))
    ts = np.arange(10)
    with pytest.raises(InputError, match=r"must be sorted.*row 5 is earlier than row 4"):
        next(cv.split(X, timestamps=np.array([0, 1, 2, 3, 4, 3, 6, 7, 8, 9])))
    with pytest.raises(InputError, match="`label_end` is earlier than its timestamp at row 2"):
        next(cv.split(X, timestamps=ts, label_end=np.array([0, 1, 1, 3, 4, 5, 6, 7, 8, 9])))
    with pytest.raises(InputError, match="not larger than the purge gap \\(1\\) plus the embargo"):
        next(CombinatorialPurgedCV(5, 2, embargo_pct=0.1, purge_pct=0.1).split(X))
    with pytest.raises(InputError, match="3 unique timestamps cannot make `n_groups=5` groups"):
        next(cv.split(np.zeros((3, 1))))
    with pytest.raises(InputError, match="`label_end` has a null at row 9"):
        next(cv.split(X, timestamps=ts, label_end=pl.Series([*range(1, 10), None])))
    with pytest.raises(InputError, match="both be datetimes or both be integers"):
        next(cv.split(X, label_end=np.arange(10).astype("datetime64[D]")))


# -- properties against the reference ----------------------------------------------------------


@st.composite
def panels(draw):
    n_groups = draw(st.integers(2, 6))
    n_test_groups = draw(st.integers(1, n_groups - 1))
    embargo_pct = draw(st.sampled_from([0.0, 0.02, 0.05]))
    purge_pct = draw(st.sampled_from([0.0, 0.0, 0.03]))
    # only panels the splitter accepts: every group wider than the purge gap plus the embargo
    # (the refusal itself is tested above)
    n_unique = draw(
        st.integers(n_groups * 3, 40).filter(
            lambda u: (
                u // n_groups
                > math.ceil(round(purge_pct * u, 9)) + math.ceil(round(embargo_pct * u, 9))
            )
        )
    )
    per_ts = draw(st.lists(st.integers(1, 3), min_size=n_unique, max_size=n_unique))
    gaps = draw(st.lists(st.integers(1, 3), min_size=n_unique, max_size=n_unique))
    uniq = np.cumsum(gaps)
    ts = np.repeat(uniq, per_ts)
    spans = draw(st.lists(st.integers(0, 8), min_size=len(ts), max_size=len(ts)))
    return ts, ts + np.array(spans), n_groups, n_test_groups, embargo_pct, purge_pct


@given(panels())
def test_kernel_equals_reference_and_properties(case):
    ts, le, n_groups, k, embargo_pct, purge_pct = case
    cv = CombinatorialPurgedCV(n_groups, k, embargo_pct=embargo_pct, purge_pct=purge_pct)
    n = len(ts)
    got = [(tr, te) for tr, te in cv.split(np.zeros((n, 1)), timestamps=ts, label_end=le)]
    expected = reference_split(ts, le, n_groups, k, embargo_pct, purge_pct)
    assert [(a.tolist(), b.tolist()) for a, b in got] == expected
    uniq = np.unique(ts)
    embargo_n = math.ceil(round(embargo_pct * len(uniq), 9))
    tested = np.zeros(n, dtype=int)
    for train, test in got:
        assert train.dtype == np.int64 and test.dtype == np.int64
        assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
        assert np.intersect1d(train, test).size == 0
        # no training label interval overlaps a test label interval
        tr_lo, tr_hi = ts[train][:, None], le[train][:, None]
        assert not np.any((tr_lo <= le[test][None, :]) & (ts[test][None, :] <= tr_hi))
        # nothing within the embargo after a test block is trained on
        test_u = np.searchsorted(uniq, ts[test])
        ends = [u for u in np.unique(test_u) if u + 1 not in set(test_u)]
        train_u = np.searchsorted(uniq, ts[train])
        for end in ends:
            assert not np.any((train_u > end) & (train_u <= end + embargo_n))
        tested[test] += 1
    # every row is tested in k/N of the splits: C(N-1, k-1) of C(N, k)
    assert np.all(tested == math.comb(n_groups - 1, k - 1))
    # each path covers every group exactly once, and uses each (split, group) pair once
    paths = cv.path_splits()
    assert paths.shape == (cv.n_paths, n_groups)
    pairs = {(int(s), g) for p in paths for g, s in enumerate(p)}
    assert len(pairs) == cv.n_paths * n_groups
    assert pairs == {(s, g) for s, combo in enumerate(cv.test_groups) for g in combo}


def test_docstring_examples_run():
    import doctest

    from quantcli.backtest import cpcv, gates

    for module in (cpcv, gates):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_row_count_peer_splits_a_timestamp_where_we_do_not():
    # skfolio groups rows, not timestamps: on a 3-symbol panel a timestamp straddles train/test
    from skfolio.model_selection import CombinatorialPurgedCV as SkfolioCPCV

    ts = np.repeat(np.arange(10), 3)
    X = np.zeros((30, 1))
    straddles = 0
    for train, tests in SkfolioCPCV(n_folds=4, n_test_folds=2).split(X):
        test = np.concatenate(tests)
        straddles += np.intersect1d(ts[train], ts[test]).size
    assert straddles > 0
    for train, test in CombinatorialPurgedCV(4, 2, embargo_pct=0.0).split(X, timestamps=ts):
        assert np.intersect1d(ts[train], ts[test]).size == 0
