"""The feature-kind interface: every fact about an indicator kind lives in one :class:`Kind`.

A kind is declared once, in one module of :mod:`quantcli.features.kinds`, and registered with
:func:`register`. Everything else -- parameter validation, the warm-up (lookback), the Numba
kernel that computes it, the streaming state that kernel carries, the Polars-engine twin, the
output columns and the TA-Lib oracle the tests compare against -- is read from that object.

The streaming contract
----------------------
A kernel is a single pass over one symbol's bars that keeps everything it needs from the past
in a flat ``float64`` state vector (running sums, recursive EMA/Wilder values, window ring
buffers, a bar counter). A full build starts each symbol from ``init_state(params)``; an
incremental build starts from the state stored after the symbol's last computed bar. Because
both paths run the *same* arithmetic in the *same* order, continuing from a stored state is
bit-identical to a rebuild::

    s = kind.init_state(p)
    kind.kernel(x[:, :k], p_vec, s, out[:, :k])   # bars 0..k-1, s now holds the state at k-1
    kind.kernel(x[:, k:], p_vec, s, out[:, k:])   # == one call over x[:, :]

Kernel signature (``@njit(cache=True, nogil=True)``)::

    kernel(inputs: float64[:, :]  # (len(kind.inputs), n) rows in kind.inputs order
           params: float64[:]     # kind.param_vector(params), in kind.params order
           state:  float64[:]     # kind.state_size(params) slots, updated in place
           out:    float64[:, :]  # (len(kind.outputs), n), every cell written (NaN in warm-up)
           ) -> None

``scope`` says what a kind reads:

* ``"bars"``: the symbol's own bar columns (``open high low close volume``).
* ``"features"``: other features of the same set, per symbol (lag, ratio, difference, rolling
  z-score); ``inputs`` then names feature *roles* bound by the declaration
  (``params = { of = "rsi_14" }``), and the engine orders features so inputs come first.
* ``"cross_section"``: one value per (ts, symbol) from all symbols at the same ``ts`` (rank,
  z-score). Stateless across bars; computed after the per-symbol stage on the rows at hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from quantcli.errors import InputError

Scope = Literal["bars", "features", "cross_section"]
BAR_INPUTS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Param:
    """One declared parameter of a kind, validated at load time."""

    name: str
    type: type = int  # int or float (a float param accepts an int)
    min: float | None = 1
    max: float | None = None
    default: Any = None  # None: required
    doc: str = ""

    def check(self, value: Any, where: str) -> Any:
        """``value`` converted to ``self.type``; :class:`InputError` naming ``where`` if bad.

        A ``str`` param names a feature of the same set (a transform's input, e.g.
        ``of = "rsi_14"``); the declaration checks that the feature exists."""
        if self.type is str:
            if not isinstance(value, str) or not value:
                raise InputError(f"{where}: param `{self.name}` must name a feature, got {value!r}")
            return value
        ok_types = (int,) if self.type is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            raise InputError(
                f"{where}: param `{self.name}` must be {self.type.__name__}, got {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{where}: param `{self.name}` must be finite, got {value!r}")
        if self.min is not None and value < self.min:
            raise InputError(f"{where}: param `{self.name}` must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise InputError(f"{where}: param `{self.name}` must be <= {self.max}, got {value!r}")
        return self.type(value)


#: ``window``, the common parameter: bars in the window
WINDOW = Param("window", int, min=1, doc="bars in the window")
#: ``window`` of the kinds TA-Lib defines from two bars on (RSI, BBANDS, STDDEV, the directional
#: system, NATR, ...): over one bar they would give a number TA-Lib has no value to compare with
WINDOW2 = Param("window", int, min=2, doc="bars in the window")


@dataclass(frozen=True)
class Kind:
    """An indicator kind. See the module docstring for the kernel and state contract."""

    name: str
    params: tuple[Param, ...]
    inputs: tuple[str, ...]
    lookback: Callable[[Mapping[str, Any]], int]
    kernel: Any
    state_size: Callable[[Mapping[str, Any]], int]
    init_state: Callable[[Mapping[str, Any]], np.ndarray]
    polars: Callable[..., Any]
    outputs: tuple[str, ...] = ("value",)
    talib: Callable[..., Any] | None = None
    talib_name: str = ""  # e.g. "SMA", shown in docs/features.md; "" = no TA-Lib counterpart
    scope: Scope = "bars"
    doc: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def check_params(self, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Declared params checked and completed with defaults; unknown keys are refused."""
        known = {p.name for p in self.params}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(
                f"{where}: kind '{self.name}' has no param {unknown[0]!r}",
                hint=f"its params: {', '.join(sorted(known)) or 'none'}",
            )
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in raw:
                out[p.name] = p.check(raw[p.name], where)
            elif p.default is None:
                raise InputError(f"{where}: kind '{self.name}' needs param `{p.name}`")
            else:
                out[p.name] = p.default
        return out

    def param_vector(self, params: Mapping[str, Any]) -> np.ndarray:
        """The kernel's ``params`` argument: the numeric params in declaration order."""
        return np.array(
            [float(params[p.name]) for p in self.params if p.type in (int, float)],
            dtype=np.float64,
        )


_REGISTRY: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add ``kind`` to the registry (at import of its module); a duplicate name is a bug."""
    if kind.name in _REGISTRY:
        raise RuntimeError(f"feature kind {kind.name!r} registered twice")
    _REGISTRY[kind.name] = kind
    return kind


def get_kind(name: str, where: str = "") -> Kind:
    """The registered kind ``name``; :class:`InputError` listing the known kinds otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        prefix = f"{where}: " if where else ""
        raise InputError(
            f"{prefix}unknown feature kind {name!r}", hint=f"known kinds: {', '.join(all_kinds())}"
        ) from None


def all_kinds() -> list[str]:
    """Registered kind names, sorted."""
    return sorted(_REGISTRY)
