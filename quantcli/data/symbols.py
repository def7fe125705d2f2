"""The one rule a symbol (ticker) follows, in ingest and in serving alike.

A symbol is 1 to :data:`MAX_SYMBOL_LENGTH` characters, each an ASCII letter, a digit or one of
``. - _ ^ = /`` (``BRK.B``, ``^GSPC``, ``ES=F``, ``EUR/USD``). The whole string must match: a
trailing newline is refused (``re.fullmatch``, not ``$``, which matches before a final ``\\n``).
The alphabet has no ``[``, so a stored symbol can never be read as rich markup; no whitespace,
so it prints on one line.

A bar whose symbol breaks the rule is refused at ingest, because serving refuses that symbol
and such bars could never be predicted.
"""

from __future__ import annotations

import re

MAX_SYMBOL_LENGTH: int = 32
SYMBOL_ALPHABET: str = "letters, digits or . - _ ^ = /"
SYMBOL_PATTERN: str = rf"[A-Za-z0-9.\-_^=/]{{1,{MAX_SYMBOL_LENGTH}}}"
SYMBOL_RULE: str = f"1-{MAX_SYMBOL_LENGTH} {SYMBOL_ALPHABET}"

_SYMBOL = re.compile(SYMBOL_PATTERN)
# For polars' regex engine (Rust): anchored at both ends, ``\z`` being the absolute end.
POLARS_SYMBOL_PATTERN: str = rf"\A{SYMBOL_PATTERN}\z"


def is_valid_symbol(value: object) -> bool:
    """True if ``value`` is a string that follows the symbol rule (the whole string)."""
    return isinstance(value, str) and _SYMBOL.fullmatch(value) is not None


def shown(value: object, limit: int = 40) -> str:
    """``repr`` of a (possibly hostile) value, cut to ``limit`` characters for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "MAX_SYMBOL_LENGTH",
    "POLARS_SYMBOL_PATTERN",
    "SYMBOL_PATTERN",
    "SYMBOL_RULE",
    "is_valid_symbol",
    "shown",
]
