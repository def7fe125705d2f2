"""Commands added to `qcli features` by another module (one owner per file)."""

from __future__ import annotations

from quantcli.cli.features import app

__all__ = ["app"]
