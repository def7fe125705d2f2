"""Bar frequency and annualization: one place for the periods per year of a bar interval.

A feature set declares its bar interval (``frequency = "1h"``) and may declare its periods per
year; everything that annualizes (backtest Sharpe, performance monitoring, the guard) takes the
set's value. Without a set, the daily convention (:data:`TRADING_DAYS`) applies. Light on
purpose (no numeric imports): monitors and the CLI import it.
"""

from __future__ import annotations

import re
from datetime import timedelta

from quantcli.errors import InputError

#: Trading days a year: the periods per year of daily bars unless a set says otherwise.
TRADING_DAYS = 252
_FREQUENCY = re.compile(r"([1-9][0-9]{0,4})(s|m|h|d|w)")
#: Seconds per unit of a bar interval (``"5m"`` is 5 x 60 s).
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_frequency(raw: str, where: str = "frequency") -> timedelta:
    """The bar interval of ``"1d"``, ``"1h"``, ``"5m"``, ``"30s"``, ``"1w"``."""
    m = _FREQUENCY.fullmatch(raw) if isinstance(raw, str) else None
    if m is None:
        raise InputError(f'{where}: must be a bar interval such as "1d", "1h", "5m", got {raw!r}')
    return timedelta(seconds=int(m.group(1)) * UNIT_SECONDS[m.group(2)])


def default_periods_per_year(interval: timedelta) -> float:
    """Periods per year implied by the bar interval: 252 trading days for daily bars, 52 for
    weekly; an intraday interval counts its bars in a 24-hour day on 252 days. Declare
    ``periods_per_year`` for any other calendar (equity sessions, 24/5 FX on 260 days, 24/7
    crypto)."""
    week = timedelta(days=7)
    if interval >= week:
        return 52.0 * (week / interval)
    return TRADING_DAYS * (timedelta(days=1) / interval)


def resolve_periods_per_year(explicit: float | None = None, declared: float | None = None) -> float:
    """``explicit`` if given (checked > 0), else ``declared`` (a feature set's periods per year),
    else :data:`TRADING_DAYS`. :func:`quantcli.features.definitions.periods_per_year` looks the
    declared value up by feature-set name."""
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, int | float) or not explicit > 0:
            raise InputError(f"`periods_per_year` must be positive, got {explicit!r}")
        return float(explicit)
    return float(TRADING_DAYS) if declared is None else float(declared)
