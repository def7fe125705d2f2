"""The typed results of the data and feature workflows print the JSON keys the commands always
printed (plus the documented `warnings` of a build and `spacing` of a CLI ingest)."""

from __future__ import annotations

import dataclasses

import pytest

from quantcli.data import ingest_sample, validate_files
from quantcli.data.sample import sample_paths
from quantcli.features.authoring import check_feature_set_file, new_feature_set
from quantcli.features.build import build_features
from quantcli.features.export import export_features
from quantcli.results import Result

INGEST_KEYS = [
    "ingest_id", "ingested_at", "sources", "rows_in", "rows_inserted", "rows_updated",
    "rows_unchanged", "symbols", "ts_min", "ts_max", "input_sha256", "quality", "store",
]  # fmt: skip
BUILD_KEYS = [
    "build_id", "built_at", "feature_set", "feature_version", "table", "mode", "engine",
    "previous_engine", "input_sha256", "symbols", "bars_read", "rows_computed", "rows_written",
    "rows_deleted", "warmup_rows_dropped", "symbols_rewritten", "quality", "timings_s",
    "executor", "store", "paths", "online", "warnings",
]  # fmt: skip
EXPORT_KEYS = ["table", "path", "format", "rows", "symbols", "columns", "start", "end"]


def test_ingest_build_and_export_results(qcli_home, tmp_path):
    ingested = ingest_sample()
    assert isinstance(ingested, Result) and ingested.passed
    assert list(ingested.to_dict()) == INGEST_KEYS
    assert ingested["rows_inserted"] == ingested.rows_inserted == 10062
    assert ingested.raise_if_failed() is ingested
    with pytest.raises(dataclasses.FrozenInstanceError):
        ingested.rows_in = 0  # type: ignore[misc]
    built = build_features()
    assert list(built.to_dict()) == BUILD_KEYS and built.warnings == []
    exported = export_features(tmp_path / "f.parquet")
    assert list(exported.to_dict()) == [*EXPORT_KEYS, "feature_set"]
    assert (exported.table, exported.rows) == ("technical_features_v1", built.rows_written)


def test_validation_new_and_check_results(qcli_home):
    report = validate_files(sample_paths())
    assert list(report.to_dict()) == ["accepted", "quality"] and report.accepted
    assert [(w.check, w.count) for w in report.quality.warnings] == [
        ("zero_volume", 2),
        ("naive_timestamp", 10062),  # the sample's files carry dates
        ("gap", 6),
    ]
    written = new_feature_set("desk_v1")
    assert list(written.to_dict()) == ["path", "feature_set", "table", "features", "source"]
    checked = check_feature_set_file(written.path)
    assert list(checked.to_dict())[:2] == ["ok", "name"] and checked["ok"] is True
    assert checked.declaration.table == written.table == "desk_features_v1"
