"""`qcli serve` and `qcli predict`: the prediction service and in-process predictions."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the top-level serving commands to the root app."""
