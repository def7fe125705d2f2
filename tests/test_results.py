"""Result: the typed outcome of a workflow, and the one gate rule the CLI and the library share."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from quantcli.backtest import BacktestValidator, GateVerdict
from quantcli.errors import GateFailedError
from quantcli.results import Result, jsonable, to_json


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check(Result):
    name: str
    score: float = 0.0
    failure_message: ClassVar[str] = "the check of the test failed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hinted(Result):
    where: str

    def message(self) -> str:
        return f"{self.where}: broken"

    def failure_hint(self) -> str | None:
        return "run the verifier"


class Colour(Enum):
    RED = "red"


def test_to_dict_lists_every_field_in_declaration_order():
    r = Check(passed=True, name="a", score=1.5)
    assert r.to_dict() == {"passed": True, "reasons": (), "name": "a", "score": 1.5}
    assert list(r.to_dict()) == ["passed", "reasons", "name", "score"]


def test_a_passed_result_returns_itself():
    r = Check(passed=True, name="a")
    assert r.raise_if_failed() is r
    assert not r.failed


def test_a_failed_result_raises_exit_code_1_with_its_reasons_and_json():
    r = Check(passed=False, reasons=["score 0.1 < 0.5", "too few rows"], name="a", score=0.1)
    with pytest.raises(GateFailedError) as info:
        r.raise_if_failed()
    err = info.value
    assert err.exit_code == 1
    assert err.message == "the check of the test failed"
    assert err.reasons == ["score 0.1 < 0.5", "too few rows"]
    assert err.result == {
        "passed": False,
        "reasons": ["score 0.1 < 0.5", "too few rows"],
        "name": "a",
        "score": 0.1,
    }
    assert err.hint is None
    json.dumps(err.result)  # the CLI prints it as is


def test_message_and_hint_come_from_the_subclass():
    with pytest.raises(GateFailedError) as info:
        Hinted(passed=False, reasons=["seq 3 altered"], where="ledger").raise_if_failed()
    assert (info.value.message, info.value.hint) == ("ledger: broken", "run the verifier")


def test_reasons_are_frozen_and_the_result_is_immutable():
    reasons = ["one"]
    r = Check(passed=False, reasons=reasons, name="a")
    reasons.append("two")
    assert r.reasons == ("one",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.passed = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.name = "b"  # type: ignore[misc]


def test_old_dict_access_reads_to_dict():
    r = Check(passed=True, name="a", score=2.0)
    assert r["name"] == "a" and r["score"] == 2.0
    assert r.get("missing", 7) == 7
    assert "score" in r and "nope" not in r
    assert list(r.keys()) == list(r.to_dict())
    with pytest.raises(KeyError):
        r["nope"]


def test_jsonable_turns_nan_numpy_dates_paths_and_enums_into_json():
    obj: dict[str, Any] = {
        "nan": math.nan,
        "inf": -math.inf,
        "f64": np.float64(0.25),
        "i64": np.int64(3),
        "bool_": np.bool_(True),
        "arr": np.array([1.0, np.nan]),
        "ts": datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        "day": date(2026, 1, 2),
        "path": Path("/tmp/x"),
        "enum": Colour.RED,
        "tuple": (1, 2),
        "nested": Check(passed=True, name="n"),
        1: "int key",
    }
    out = jsonable(obj)
    assert out == {
        "nan": None,
        "inf": None,
        "f64": 0.25,
        "i64": 3,
        "bool_": True,
        "arr": [1.0, None],
        "ts": "2026-01-02T03:04:00+00:00",
        "day": "2026-01-02",
        "path": "/tmp/x",
        "enum": "red",
        "tuple": [1, 2],
        "nested": {"passed": True, "reasons": [], "name": "n", "score": 0.0},
        "1": "int key",
    }
    assert json.loads(to_json(obj)) == out
    assert "NaN" not in to_json({"x": math.nan})


def test_gate_verdict_is_a_result_that_still_unpacks_as_a_pair():
    losing = np.tile([0.01, -0.012], 125)
    verdict = BacktestValidator().validate_model(losing)
    assert isinstance(verdict, GateVerdict) and isinstance(verdict, Result)
    passed, metrics = verdict
    assert passed is False and verdict[0] is False
    assert metrics == verdict.to_dict() == verdict[1]
    assert list(verdict.reasons) == metrics["reasons"]
    assert verdict["status"] == "fail" and verdict.sharpe == metrics["sharpe"]
    # the metrics handed out are copies: a caller popping keys cannot change the verdict
    metrics.pop("reasons")
    assert "reasons" in verdict.to_dict()
    with pytest.raises(GateFailedError) as info:
        verdict.raise_if_failed()
    assert info.value.reasons == list(verdict.reasons)
    assert info.value.result["status"] == "fail"
