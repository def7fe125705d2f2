"""The store's reserved names: every table the SQL creates and every name the code registers."""

from __future__ import annotations

import re
from pathlib import Path

from quantcli import resources

PACKAGE = Path(resources.__file__).resolve().parent


def test_every_registered_working_name_is_reserved():
    registered = set()
    for path in PACKAGE.rglob("*.py"):
        registered.update(re.findall(r"\.register\(\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']",
                                     path.read_text()))  # fmt: skip
    assert registered, "no con.register(...) call found: the pattern is stale"
    assert registered <= resources.WORKING_NAMES, registered - resources.WORKING_NAMES


def test_the_store_tables_are_reserved():
    reserved = resources.reserved_table_names()
    for table in ("bars", "ingests", "feature_builds", "feature_build_state",
                  "feature_stream_state", "bar_fingerprints", "registry_events",
                  "monitor_predictions"):  # fmt: skip
        assert table in reserved
    assert "technical_features_v1" not in reserved
