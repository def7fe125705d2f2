"""Commands added to `qcli model` by another module (one owner per file)."""

from __future__ import annotations

from quantcli.cli.model import app

__all__ = ["app"]
