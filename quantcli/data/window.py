"""The plausibility window every bar's timestamp must fall in.

A bar dated 9999-12-31 or 1800-01-01 is a typo, not data: carried through features and the
online store it would be served as the freshest (or oldest) bar of its symbol. By default the
window runs from 1900-01-01 00:00 UTC to one day after now (a day of slack for bars stamped in
an exchange's time zone ahead of UTC); ``[data] earliest`` / ``future_days`` of a ``--config``
file and the ``--earliest`` / ``--latest`` options of ``qcli data ingest`` move it.

The date parser, :func:`quantcli.config.parse_instant`, lives in the config layer, which checks
the ``[data]`` keys with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from quantcli.config import parse_instant
from quantcli.errors import InputError

DEFAULT_EARLIEST = "1900-01-01"
DEFAULT_FUTURE_DAYS = 1.0
# beyond this a window's end would not fit a datetime; no bar is a century ahead either
MAX_FUTURE_DAYS = 36_500.0


def check_future_days(value: object, what: str) -> float:
    """``value`` as a number of days in ``[0, MAX_FUTURE_DAYS]``, or :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{what} must be a number of days, got {value!r}")
    days = float(value)
    if not (math.isfinite(days) and 0 <= days <= MAX_FUTURE_DAYS):
        raise InputError(f"{what} must be in [0, {MAX_FUTURE_DAYS:g}] days, got {value!r}")
    return days


@dataclass(frozen=True)
class TimestampWindow:
    """Bars must satisfy ``earliest <= ts <= latest`` (both inclusive, aware UTC datetimes)."""

    earliest: datetime
    latest: datetime

    def __post_init__(self) -> None:
        if self.earliest.tzinfo is None or self.latest.tzinfo is None:
            raise ValueError("`earliest` and `latest` must be time-zone-aware datetimes.")
        if self.earliest > self.latest:
            raise InputError(
                f"the timestamp window is empty: earliest {self.earliest:%Y-%m-%d %H:%M} is "
                f"after latest {self.latest:%Y-%m-%d %H:%M}",
                hint="check --earliest/--latest and [data] earliest/future_days",
            )

    @classmethod
    def build(
        cls,
        earliest: str | datetime | None = None,
        latest: str | datetime | None = None,
        *,
        future_days: float = DEFAULT_FUTURE_DAYS,
        now: datetime | None = None,
    ) -> TimestampWindow:
        """The window from options: ``latest`` defaults to ``now + future_days``."""
        if earliest is None:
            earliest = DEFAULT_EARLIEST
        lo = earliest if isinstance(earliest, datetime) else parse_instant(earliest, "--earliest")
        if latest is None:
            days = check_future_days(future_days, "future_days")
            hi = (now or datetime.now(UTC)) + timedelta(days=days)
        else:
            hi = latest if isinstance(latest, datetime) else parse_instant(latest, "--latest")
        return cls(lo, hi)

    @classmethod
    def from_config(
        cls,
        section: dict[str, object],
        earliest: str | None = None,
        latest: str | None = None,
    ) -> TimestampWindow:
        """The window of a config's ``[data]`` section; ``earliest``/``latest`` (options) win."""
        return cls.build(
            earliest if earliest is not None else str(section.get("earliest", DEFAULT_EARLIEST)),
            latest,
            future_days=float(section.get("future_days", DEFAULT_FUTURE_DAYS)),  # type: ignore[arg-type]
        )

    def describe(self) -> str:
        return f"[{self.earliest:%Y-%m-%d %H:%M}, {self.latest:%Y-%m-%d %H:%M}] UTC"


__all__ = [
    "DEFAULT_EARLIEST",
    "DEFAULT_FUTURE_DAYS",
    "TimestampWindow",
    "check_future_days",
    "parse_instant",
]
