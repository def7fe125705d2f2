"""The one boundary where pandas and pyarrow inputs become polars.

Every public function that takes a frame calls :func:`to_polars` first, so pandas
``DataFrame``/``Series``, pyarrow ``Table``/``RecordBatch``/``Array`` and polars inputs follow one
rule. pandas index levels that carry data (``symbol``, ``ts``, a named ``DatetimeIndex``) become
columns; a default ``RangeIndex`` is dropped.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from quantcli.errors import InputError


def is_pandas(obj: Any) -> bool:
    """True for a pandas object, without importing pandas."""
    return type(obj).__module__.partition(".")[0] == "pandas"


def is_pyarrow(obj: Any) -> bool:
    """True for a pyarrow object, without importing pyarrow."""
    return type(obj).__module__.partition(".")[0] == "pyarrow"


def to_polars(frame: Any, name: str = "df") -> pl.DataFrame:
    """``frame`` (polars, pandas or pyarrow) as a polars DataFrame.

    Parameters
    ----------
    frame
        A polars ``DataFrame``/``LazyFrame``, a pandas ``DataFrame``, or a pyarrow ``Table`` /
        ``RecordBatch``.
    name
        How error messages name the argument (``"entity_df"``, ``"X"``, ...).

    Raises
    ------
    InputError
        Any other type, duplicate column names, or a column that cannot be converted.
    """
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    if is_pandas(frame):
        import pandas as pd

        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        if not isinstance(frame, pd.DataFrame):
            raise InputError(f"`{name}` must be a DataFrame, got pandas {type(frame).__name__}")
        frame = _index_to_columns(frame, name)
        if frame.columns.duplicated().any():
            dup = str(frame.columns[frame.columns.duplicated()][0])
            raise InputError(f"`{name}` has the column '{dup}' twice")
        try:
            return pl.from_pandas(frame)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise InputError(f"`{name}` could not be read as a table: {exc}") from None
    if is_pyarrow(frame):
        import pyarrow as pa

        if isinstance(frame, pa.RecordBatch):
            frame = pa.Table.from_batches([frame])
        if not isinstance(frame, pa.Table):
            raise InputError(f"`{name}` must be a table, got pyarrow {type(frame).__name__}")
        try:
            out = pl.from_arrow(frame)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise InputError(f"`{name}` could not be read as a table: {exc}") from None
        assert isinstance(out, pl.DataFrame)
        return out
    raise InputError(
        f"`{name}` must be a polars, pandas or pyarrow table, got {type(frame).__name__}"
    )


def to_polars_series(values: Any, name: str = "y") -> pl.Series:
    """A 1-D input (polars/pandas Series, pyarrow Array, NumPy array, list) as a polars Series."""
    if isinstance(values, pl.Series):
        return values
    if is_pandas(values):
        return pl.Series(name, values.to_numpy())
    if is_pyarrow(values):
        import pyarrow as pa

        if isinstance(values, pa.ChunkedArray | pa.Array):
            out = pl.from_arrow(values)
            assert isinstance(out, pl.Series)
            return out.alias(name)
    try:
        return pl.Series(name, values)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"`{name}` could not be read as a column of values: {exc}") from None


def _index_to_columns(frame: Any, name: str) -> Any:
    """Named (or datetime) index levels become columns; a plain RangeIndex is dropped."""
    import pandas as pd

    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.name is None:
        return frame
    names = list(index.names)
    if isinstance(index, pd.DatetimeIndex) and names == [None]:
        names = ["ts"]
    if any(n is None for n in names):
        # an unnamed non-default index is row labels, not data
        return frame.reset_index(drop=True)
    clash = [n for n in names if n in frame.columns]
    if clash:
        raise InputError(f"`{name}` has '{clash[0]}' both as an index level and as a column")
    out = frame.copy(deep=False)
    out.index = index.set_names(names)
    return out.reset_index()
