"""Indicator kinds: one :class:`Kind` per kind, registered at import (see ``_base``).

Modules of kinds register themselves when imported below; add a kind in one module of this
package plus its parity test.
"""

from quantcli.features.kinds._base import (
    BAR_INPUTS,
    Kind,
    Param,
    Scope,
    all_kinds,
    get_kind,
    register,
)

__all__ = ["BAR_INPUTS", "Kind", "Param", "Scope", "all_kinds", "get_kind", "register"]

# Kind modules register on import.
from quantcli.features.kinds import (  # noqa: F401, I001
    classic,
    classic_trend,
    classic_momentum,
    talib_overlap,
    talib_momentum,
    talib_oscillators,
    talib_volume,
    transforms,
    cross_section,
)
