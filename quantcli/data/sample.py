"""The bundled real sample: daily bars of the S&P 500 (SPX) and the NASDAQ Composite (IXIC).

5031 bars each, 1999-01-04 .. 2018-12-31, from the ``arch`` package (see
``quantcli/_sample/PROVENANCE.md``). The files ship inside the package as the source's CSV
(gzipped), so the sample goes through the same reader as a user's files. Known quirk, kept and
reported rather than hidden: IXIC has 2 bars with volume 0 (``zero_volume`` warnings).
"""

from __future__ import annotations

import functools
from pathlib import Path

import polars as pl

from quantcli.data.quality import REQUIRED_COLUMNS
from quantcli.data.reader import read_bars

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "_sample"
SAMPLE_FILES: tuple[str, ...] = ("ndx_daily.csv.gz", "spx_daily.csv.gz")
SAMPLE_SYMBOLS: tuple[str, ...] = ("IXIC", "SPX")


def sample_paths() -> list[Path]:
    """The bundled sample files, in a fixed order."""
    return [SAMPLE_DIR / name for name in SAMPLE_FILES]


@functools.cache
def _load() -> pl.DataFrame:
    frames = [read_bars(p, label=f"sample:{p.name}").frame for p in sample_paths()]
    return pl.concat(frames).select(REQUIRED_COLUMNS).sort("symbol", "ts")


def load_sample() -> pl.DataFrame:
    """The real sample as one frame in normal form.

    Returns
    -------
    polars.DataFrame
        Columns ``symbol`` (``IXIC``, ``SPX``), ``ts`` (``Datetime("us", "UTC")``, the trading
        date at 00:00 UTC), ``open``, ``high``, ``low``, ``close`` (index points), ``volume``
        (shares, Float64); 10062 rows sorted by ``(symbol, ts)``.

    Examples
    --------
    >>> df = load_sample()
    >>> df.height, df["symbol"].unique().sort().to_list()
    (10062, ['IXIC', 'SPX'])
    """
    return _load().clone()


__all__ = ["SAMPLE_SYMBOLS", "load_sample", "sample_paths"]
