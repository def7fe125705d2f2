"""``FeatureGenerator``: the documented Python entry point, features plus their provenance.

The result is usable as the frame itself (``result.shape``, ``result["rsi_14"]``,
``result.iloc[...]`` for a pandas input) and carries the provenance in ``result.metadata``.

>>> from quantcli.data.synthetic import synthetic_universe
>>> result = FeatureGenerator(seed=42).compute_technical(synthetic_universe(2, 300, seed=1))
>>> result.shape, result.metadata["feature_set"], result.metadata["warmup_rows_dropped"]
((202, 31), 'technical_v1', 398)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantcli import __version__
from quantcli._interop import is_pandas, to_polars
from quantcli.data.validation import validate_bars
from quantcli.features import hashing
from quantcli.features.compute import block_starts, compile_plan, compute_sorted, sort_bars
from quantcli.features.definitions import load_feature_set
from quantcli.features.shard import feature_quality, feature_stats


@dataclass(frozen=True)
class FeatureResult:
    """Features and metadata returned by :meth:`FeatureGenerator.compute_technical`.

    The result stands in for the frame: attribute access, ``[]``, ``len()`` and ``iter()``
    go to :attr:`features`, so ``features = generator.compute_technical(bars)`` can be used
    as a table directly.

    Attributes
    ----------
    features
        ``symbol, ts`` and the declared features, sorted by ``(symbol, ts)``, warm-up dropped.
        A polars DataFrame, or for a pandas input a pandas DataFrame indexed by the
        ``(symbol, ts)`` MultiIndex (where :class:`~quantcli.backtest.cpcv.CombinatorialPurgedCV`
        reads the time from).
    metadata
        ``input_sha256`` (see :mod:`quantcli.features.hashing`), ``feature_set``,
        ``feature_version``, ``seed``, row counts, ``warmup_rows_dropped``, ``quality``
        (per-feature count/mean/std/min/max/zeros and the non-finite count), the validation
        warnings and ``quantcli_version``.
    """

    features: Any
    metadata: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        # only reached for names the dataclass does not define; dunders stay ours so copy and
        # pickle do not recurse before ``features`` is set
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.features, name)

    def __getitem__(self, key: Any) -> Any:
        return self.features[key]

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self) -> Any:
        return iter(self.features)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = np.asarray(self.features)
        return arr if dtype is None else arr.astype(dtype)


class FeatureGenerator:
    """Compute declared feature sets on a frame of bars.

    Parameters
    ----------
    seed
        Recorded in the metadata. The technical features are deterministic functions of the
        bars, so the seed does not change them; it is kept for feature sets that sample.
    feature_set
        The declaration used by :meth:`compute_technical` (default ``technical_v1``).
    """

    def __init__(self, seed: int = 42, feature_set: str = "technical_v1") -> None:
        if not isinstance(seed, int | np.integer):
            raise TypeError(f"`seed` must be an integer, got `seed={seed!r}`.")
        self.seed = int(seed)
        self.feature_set = feature_set
        self.spec = load_feature_set(feature_set)

    def compute_technical(
        self, df: Any, validate: bool = True, *, source: str = "<frame>"
    ) -> FeatureResult:
        """Features of ``df`` and their metadata.

        Parameters
        ----------
        df
            Bars with ``symbol, ts, open, high, low, close, volume``: a polars, pandas or
            pyarrow frame (``symbol``/``ts`` may be pandas index levels). ``ts`` must be
            timezone-aware UTC.
        validate
            Run :func:`quantcli.data.validation.validate_bars` first (as ``qcli data ingest``
            does): an error (null, non-positive price, inconsistent OHLC, duplicate key, ...)
            raises :class:`~quantcli.errors.DataValidationError` naming the row and column;
            warnings are returned in ``metadata["validation_warnings"]``.
        source
            How validation messages name the input.

        Raises
        ------
        DataValidationError
            ``validate=True`` and the bars fail a check (exit code 2 from the CLI).
        InputError
            A missing column, a null/NaN value or a duplicate key (also without validation).
        """
        as_pandas = is_pandas(df)
        df = to_polars(df, "df")
        warnings: list[dict[str, Any]] = []
        if validate:
            report = validate_bars(df, source=source)
            warnings = [
                {"check": w.check, "count": w.count, "description": w.description}
                for w in report.warnings
            ]
        plan = compile_plan(self.spec)
        srt = sort_bars(df)
        starts, symbols = block_starts(srt)
        frame, warmup = compute_sorted(srt, plan, starts)
        quality = feature_quality(feature_stats(frame, plan.names), plan.names)
        metadata = {
            "input_sha256": hashing.combine(hashing.symbol_hashes(srt, starts)),
            "feature_set": self.spec.name,
            "feature_version": self.spec.version,
            "table": self.spec.table,
            "seed": self.seed,
            "symbols": symbols,
            "bars": srt.height,
            "rows": frame.height,
            "warmup_rows_dropped": warmup,
            "quality": quality,
            "validation_warnings": warnings,
            "quantcli_version": __version__,
        }
        if as_pandas:
            return FeatureResult(frame.to_pandas().set_index(["symbol", "ts"]), metadata)
        return FeatureResult(features=frame, metadata=metadata)
