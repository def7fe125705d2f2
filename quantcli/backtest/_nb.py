"""Numba kernels of the combinatorial purged cross-validation (plain arrays in, plain arrays out).

The kernels assume what :class:`quantcli.backtest.cpcv.CombinatorialPurgedCV` has checked:
``ts`` is sorted (non-decreasing), ``label_end >= ts`` row by row, and every group holds more
unique timestamps than the purge gap plus the embargo. Times are int64 in one unit (e.g. ns).

Vocabulary: a *unique index* ``u`` numbers the distinct timestamps ``0 .. n_unique-1``;
``ustart[u]`` is the first row with that timestamp (``ustart[n_unique] == n_rows``). Groups are
contiguous runs of unique indices, ``gstart[g] .. gstart[g+1]-1``.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def scan_times(ts: np.ndarray, label_end: np.ndarray) -> tuple[int, int, int, int]:
    """One pass over the rows: ``(first unsorted row, first row with label_end < ts,
    max(label_end - ts), number of distinct timestamps)``; -1 for "none" in the first two."""
    n = ts.shape[0]
    unsorted = -1
    bad_label = -1
    max_span = 0
    n_unique = 1 if n > 0 else 0
    for i in range(n):
        span = label_end[i] - ts[i]
        if span > max_span:
            max_span = span
        if span < 0 and bad_label < 0:
            bad_label = i
        if i > 0 and ts[i] != ts[i - 1]:
            n_unique += 1
            if ts[i] < ts[i - 1] and unsorted < 0:
                unsorted = i
    return unsorted, bad_label, max_span, n_unique


@njit(cache=True)
def unique_starts(ts: np.ndarray) -> np.ndarray:
    """``ustart``: the first row of each distinct timestamp, plus ``n_rows`` as a sentinel."""
    n = ts.shape[0]
    count = 1 if n > 0 else 0
    for i in range(1, n):
        if ts[i] != ts[i - 1]:
            count += 1
    out = np.empty(count + 1, dtype=np.int64)
    k = 0
    if n > 0:
        out[0] = 0
        k = 1
    for i in range(1, n):
        if ts[i] != ts[i - 1]:
            out[k] = i
            k += 1
    out[count] = n
    return out


@njit(cache=True)
def group_max_label_end(
    label_end: np.ndarray, ustart: np.ndarray, gstart: np.ndarray
) -> np.ndarray:
    """The latest ``label_end`` of the rows of each group (used to purge after a test block)."""
    n_groups = gstart.shape[0] - 1
    out = np.empty(n_groups, dtype=np.int64)
    for g in range(n_groups):
        r0 = ustart[gstart[g]]
        r1 = ustart[gstart[g + 1]]
        m = label_end[r0]
        for i in range(r0 + 1, r1):
            if label_end[i] > m:
                m = label_end[i]
        out[g] = m
    return out


@njit(cache=True)
def _blocks(is_test: np.ndarray) -> np.ndarray:
    """``(n_blocks, 2)`` first and last group of each run of adjacent test groups."""
    n_groups = is_test.shape[0]
    out = np.empty((n_groups, 2), dtype=np.int64)
    nb = 0
    g = 0
    while g < n_groups:
        if is_test[g]:
            out[nb, 0] = g
            while g + 1 < n_groups and is_test[g + 1]:
                g += 1
            out[nb, 1] = g
            nb += 1
        g += 1
    return out[:nb]


@njit(cache=True)
def _fill_range(out: np.ndarray, at: int, start: int, stop: int) -> None:
    """``out[at : at + stop - start] = start, start + 1, ..., stop - 1``.

    Indexing a slice from 0 lets LLVM vectorize the loop; ``out[at + j]`` did not.
    """
    dst = out[at : at + max(stop - start, 0)]
    for j in range(dst.shape[0]):
        dst[j] = start + j


@njit(cache=True)
def _train_rows(
    ts: np.ndarray,
    label_end: np.ndarray,
    ustart: np.ndarray,
    gstart: np.ndarray,
    gmax_end: np.ndarray,
    blocks: np.ndarray,
    purge_n: int,
    embargo_n: int,
    max_span: int,
    out: np.ndarray,
) -> int:
    """Write the training rows into ``out`` (when it is long enough) and return their count."""
    n = ts.shape[0]
    n_unique = ustart.shape[0] - 1
    write = out.shape[0] > 0
    count = 0
    cursor = 0  # every row before the cursor is decided
    for b in range(blocks.shape[0]):
        ga = blocks[b, 0]
        gb = blocks[b, 1]
        u0 = gstart[ga]
        u1 = gstart[gb + 1] - 1
        r0 = ustart[u0]
        r1 = ustart[u1 + 1]
        t0 = ts[r0]
        gap_row = ustart[max(u0 - purge_n, 0)]
        scan = np.searchsorted(ts[:gap_row], t0 - max_span)
        e_max = gmax_end[ga]
        for h in range(ga + 1, gb + 1):
            e_max = max(e_max, gmax_end[h])
        purge_end = r1 + np.searchsorted(ts[r1:], e_max, side="right")
        embargo_end = ustart[min(u1 + 1 + embargo_n, n_unique)]
        end = max(purge_end, embargo_end)
        # rows far before the block are kept
        keep_to = max(min(scan, gap_row), cursor)
        if write:
            _fill_range(out, count, cursor, keep_to)
        count += max(keep_to - cursor, 0)
        # rows near the block start are kept unless their label reaches the block (purge)
        for i in range(keep_to, gap_row):
            if label_end[i] < t0:
                if write:
                    out[count] = i
                count += 1
        cursor = max(cursor, gap_row, end)
    if write:
        _fill_range(out, count, cursor, n)
    count += max(n - cursor, 0)
    return count


@njit(cache=True)
def split_indices(
    ts: np.ndarray,
    label_end: np.ndarray,
    ustart: np.ndarray,
    gstart: np.ndarray,
    gmax_end: np.ndarray,
    is_test: np.ndarray,
    purge_n: int,
    embargo_n: int,
    max_span: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` row indices (sorted int64) of one split.

    ``is_test[g]`` marks the test groups; adjacent test groups form one block. For each block
    with first timestamp ``T0``, last timestamp ``T1`` and latest label end ``E``:

    * label purge before: drop training rows with ``ts < T0 <= label_end`` (their label interval
      overlaps the first test label interval);
    * label purge after: drop training rows with ``T1 < ts <= E`` (they start inside a test
      label interval);
    * ``purge_n`` unique timestamps right before the block are dropped (the fixed gap);
    * ``embargo_n`` unique timestamps right after the block are dropped (the embargo).

    ``max_span`` is ``max(label_end - ts)``: rows earlier than ``T0 - max_span`` cannot reach
    ``T0``, so the per-row label check stays near the block start; the other rows are written
    as whole ranges.
    """
    blocks = _blocks(is_test)
    empty = np.empty(0, dtype=np.int64)
    n_train = _train_rows(
        ts, label_end, ustart, gstart, gmax_end, blocks, purge_n, embargo_n, max_span, empty
    )
    train = np.empty(n_train, dtype=np.int64)
    _train_rows(
        ts, label_end, ustart, gstart, gmax_end, blocks, purge_n, embargo_n, max_span, train
    )
    n_test = 0
    for b in range(blocks.shape[0]):
        n_test += ustart[gstart[blocks[b, 1] + 1]] - ustart[gstart[blocks[b, 0]]]
    test = np.empty(n_test, dtype=np.int64)
    k = 0
    for b in range(blocks.shape[0]):
        r0 = ustart[gstart[blocks[b, 0]]]
        r1 = ustart[gstart[blocks[b, 1] + 1]]
        _fill_range(test, k, r0, r1)
        k += r1 - r0
    return train, test
