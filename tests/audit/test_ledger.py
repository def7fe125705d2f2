"""The audit ledger: hash chain, tamper detection, concurrency, durability, export."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantcli.audit import (
    GENESIS_HASH,
    AuditLedger,
    LedgerBrokenError,
    export_ledger,
    features_sha256,
    ledger_path,
    verify_ledger,
)
from quantcli.errors import InputError, NotFoundError

REPO = Path(__file__).resolve().parents[2]


def entry(i: int, day: int = 1) -> dict:
    return {
        "recorded_at": datetime(2026, 1, day, 12, 0, i % 60, tzinfo=UTC).isoformat(),
        "request_id": f"req{i}",
        "source": "cli",
        "alias": "production",
        "symbol": f"SYM{i % 3}",
        "prediction": 0.001 * i,
        "fallback": None,
        "feature_ts": "2025-12-31T00:00:00+00:00",
        "features_sha256": "ab" * 32,
        "model_name": "momentum",
        "model_version": "3",
        "model_run_id": "run",
        "feature_version": "technical_v1@1",
        "dataset_manifest_id": "m",
        "onnx_model": {"name": "model.onnx", "sha256": "cd" * 32},
        "inference_latency_ms": 0.01,
        "deployed_at": "2026-01-01T00:00:00+00:00",
    }


def write_records(n: int, day: int = 1, per_call: int = 2) -> list[dict]:
    out = []
    with AuditLedger() as led:
        for i in range(0, n, per_call):
            out += led.append([entry(j, day) for j in range(i, min(n, i + per_call))])
    return out


def test_chain_links_every_record_to_the_previous_hash(qcli_home):
    recs = write_records(7)
    assert [r["seq"] for r in recs] == list(range(7))
    assert recs[0]["prev_hash"] == GENESIS_HASH == "0" * 64
    for prev, rec in itertools.pairwise(recs):
        assert rec["prev_hash"] == prev["hash"]
    # the hash is sha256 of the canonical JSON without "hash" (computed independently here)
    lines = ledger_path().read_text().splitlines()
    for line, rec in zip(lines, recs, strict=True):
        stored = json.loads(line)
        body = {k: v for k, v in stored.items() if k not in ("hash", "sig")}
        canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        assert hashlib.sha256(canon).hexdigest() == stored["hash"] == rec["hash"]
    res = verify_ledger()
    assert res["last_anchored"] == {"seq": 6, "hash": recs[-1]["hash"]}
    assert res["unanchored_tail"] == 0 and res["signed_head"]["count"] == 7
    assert {k: res[k] for k in ("path", "ok", "records", "head_hash", "first_broken")} == {
        "path": str(ledger_path()),
        "ok": True,
        "records": 7,
        "head_hash": recs[-1]["hash"],
        "first_broken": None,
    }


def test_reopened_ledger_continues_the_chain(qcli_home):
    first = write_records(3)
    second = write_records(2)
    assert second[0]["seq"] == 3
    assert second[0]["prev_hash"] == first[-1]["hash"]
    assert verify_ledger()["records"] == 5


def test_nan_prediction_is_stored_as_null_and_still_verifies(qcli_home):
    with AuditLedger() as led:
        (rec,) = led.append([{**entry(0), "prediction": float("nan")}])
    assert rec["prediction"] is None
    assert verify_ledger()["ok"]


def test_features_hash_is_sha256_of_little_endian_float64():
    values = [1.5, -2.25, None]
    expected = hashlib.sha256(struct.pack("<3d", 1.5, -2.25, float("nan"))).hexdigest()
    assert features_sha256(values) == expected
    assert features_sha256([1.5, -2.25, 0.0]) != expected


def _rewrite_line(k: int, fn) -> None:
    p = ledger_path()
    lines = p.read_text().splitlines(keepends=True)
    lines[k] = fn(lines[k])
    p.write_text("".join(lines))


def test_edited_record_is_named_by_verify_and_cli_exits_1(qcli_home, qcli):
    write_records(10)
    # change one prediction by one digit, leaving the stored hash as it was
    _rewrite_line(6, lambda s: s.replace('"prediction":0.006', '"prediction":0.007'))
    res = verify_ledger()
    assert res["ok"] is False
    assert res["first_broken"] == {
        "kind": "record",
        "line": 7,
        "seq": 6,
        "reason": "content does not match its hash (the record was altered)",
    }
    assert res["records"] == 6
    out = qcli.subprocess("audit", "verify", timeout=120)
    assert out.code == 1
    assert "broken at record seq 6 (line 7)" in out.err
    out = qcli.subprocess("audit", "verify", "--json", timeout=120)
    assert out.code == 1
    assert out.json["first_broken"]["seq"] == 6


def test_edit_with_recomputed_hash_is_named_at_that_record(qcli_home):
    from quantcli.audit import record_hash

    write_records(5)

    def forge(line: str) -> str:
        rec = json.loads(line)
        rec["prediction"] = 42.0
        rec["hash"] = record_hash(rec)
        return json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"

    _rewrite_line(2, forge)
    broken = verify_ledger()["first_broken"]
    # json.dumps puts "hash" among the sorted keys, not last: not the writer's canonical line
    assert (broken["seq"], broken["line"]) == (2, 3)
    assert "canonical form" in broken["reason"]


def test_deleted_record_is_detected(qcli_home):
    write_records(5, per_call=1)
    _rewrite_line(1, lambda s: "")
    broken = verify_ledger()["first_broken"]
    assert (broken["seq"], broken["line"]) == (1, 2)
    assert "seq is 2, expected 1" in broken["reason"]


def test_a_break_inside_an_append_is_named_at_the_first_record_no_signature_vouches_for(
    qcli_home,
):
    write_records(5, per_call=2)  # signatures on seq 1 and 3 (the last record of each append)
    _rewrite_line(3, lambda s: "")  # delete the signed seq 3: seq 2 is vouched for by nothing
    broken = verify_ledger()["first_broken"]
    assert (broken["seq"], broken["line"]) == (2, 3)
    assert broken["reason"].startswith("seq 3: seq is 4, expected 3")
    assert "records seq 2..2 before it are not covered by a signature" in broken["reason"]


def test_truncated_last_record_is_detected_and_writer_refuses_to_extend(qcli_home):
    write_records(3)
    p = ledger_path()
    p.write_bytes(p.read_bytes()[:-20])
    broken = verify_ledger()["first_broken"]
    assert (broken["seq"], broken["line"]) == (2, 3)
    assert "incomplete" in broken["reason"]
    with pytest.raises(LedgerBrokenError, match="incomplete") as err:
        AuditLedger()
    assert err.value.exit_code == 2


def test_missing_ledger_is_not_found_exit_2(qcli_home, qcli):
    with pytest.raises(NotFoundError):
        verify_ledger()
    assert qcli.subprocess("audit", "verify", timeout=120).code == 2


_WRITER = """
import sys
from quantcli.audit import AuditLedger
n = int(sys.argv[1])
led = AuditLedger()
for i in range(n):
    led.append([{"symbol": "P%s" % sys.argv[2], "i": i}, {"symbol": "Q", "i": i}])
print("appended", flush=True)
if sys.argv[3] == "hang":
    import time
    time.sleep(60)
led.close()
"""


def test_two_processes_appending_concurrently_keep_one_linear_chain(qcli_home):
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, "150", str(k), "close"], cwd=REPO)
        for k in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    res = verify_ledger()
    assert res["ok"], res["first_broken"]
    assert res["records"] == 2 * 150 * 2
    # each call's two records are adjacent (one write per call)
    recs = [json.loads(line) for line in ledger_path().read_text().splitlines()]
    for a, b in zip(recs[0::2], recs[1::2], strict=True):
        assert b["symbol"] == "Q" and a["i"] == b["i"] and a["symbol"].startswith("P")


def test_records_survive_kill_9_right_after_append(qcli_home):
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, "40", "0", "hang"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "appended"
    proc.send_signal(signal.SIGKILL)  # no close(), no atexit: only what write(2) handed over
    proc.wait(timeout=10)
    proc.stdout.close()
    res = verify_ledger()
    assert res["ok"] and res["records"] == 80


def test_fsync_policy_batch_flushes_in_background_and_always_inline(qcli_home, tmp_path):
    led = AuditLedger(tmp_path / "a.jsonl", durability="always")
    led.append([entry(0)])
    led.append([entry(1)])
    assert led.fsyncs == 2
    led.close()
    led = AuditLedger(tmp_path / "b.jsonl", fsync_interval_s=0.01)
    led.append([entry(0)])
    led._dirty.wait(1)
    for _ in range(200):  # the flusher fsyncs within the window
        if led.fsyncs:
            break
        import time

        time.sleep(0.01)
    assert led.fsyncs >= 1
    led.close()
    with pytest.raises(InputError, match="durability"):
        AuditLedger(tmp_path / "c.jsonl", durability="never")


def test_export_since_writes_exact_rows_to_parquet(qcli_home, tmp_path, qcli):
    with AuditLedger() as led:
        led.append([entry(i, day=1) for i in range(4)])
        led.append([entry(i, day=3) for i in range(4, 7)])
    out = tmp_path / "a.parquet"
    res = export_ledger(out, since="2026-01-02")
    assert res["rows"] == 3 and res["ledger_records"] == 7
    frame = pl.read_parquet(out)
    assert frame["seq"].to_list() == [4, 5, 6]
    assert frame["symbol"].to_list() == ["SYM1", "SYM2", "SYM0"]
    assert frame["prediction"].to_list() == pytest.approx([0.004, 0.005, 0.006])
    assert frame["onnx_model_sha256"].to_list() == ["cd" * 32] * 3
    assert frame.schema["recorded_at"] == pl.Datetime("us", "UTC")
    # CLI, everything (in-process: the verify and missing-ledger tests cross the real process)
    code, stdout, stderr = qcli(
        "audit", "export", "--output", str(tmp_path / "all.parquet"), "--json"
    )
    assert code == 0, stderr
    assert json.loads(stdout)["rows"] == 7
    assert pl.read_parquet(tmp_path / "all.parquet").height == 7


def test_export_keeps_each_records_event_arm_and_every_other_field(qcli_home, tmp_path):
    canary = entry(0) | {"arm": "candidate"}
    shadow = {
        "recorded_at": "2026-01-01T12:00:01+00:00",
        "event": "shadow",
        "request_id": "req0",
        "source": "shadow",
        "alias": "production",
        "symbol": "SYM0",
        "shadow_prediction": 0.25,
        "shadow_version": "4",
        "production_prediction": 0.5,
        "production_version": "3",
        "model_name": "momentum",
    }
    swap = {
        "recorded_at": "2026-01-01T12:00:02+00:00",
        "event": "swap",
        "source": "service",
        "alias": "production",
        "model_name": "momentum",
        "arm": "production",
        "from_version": "3",
        "to_version": "4",
        "reason": "promote",
        "pid": 7,
    }
    with AuditLedger() as led:
        led.append([canary, shadow, swap])
    out = tmp_path / "events.parquet"
    assert export_ledger(out)["rows"] == 3
    frame = pl.read_parquet(out)
    assert frame["event"].to_list() == ["prediction", "shadow", "swap"]
    assert frame["arm"].to_list() == ["candidate", None, "production"]
    details = [None if d is None else json.loads(d) for d in frame["details"].to_list()]
    assert details == [
        None,
        {
            "production_prediction": 0.5,
            "production_version": "3",
            "shadow_prediction": 0.25,
            "shadow_version": "4",
        },
        {"from_version": "3", "pid": 7, "reason": "promote", "to_version": "4"},
    ]
    assert frame["prediction"].to_list() == [0.0, None, None]  # a shadow served nothing
    assert frame["sig"].null_count() == 2 and frame["sig"][2].startswith("ed25519:")


def test_export_refuses_bad_input_and_broken_ledger(qcli_home, tmp_path, qcli):
    write_records(3)
    code, _, err = qcli(
        "audit", "export", "--since", "yesterday", "--output", str(tmp_path / "x.parquet")
    )
    assert code == 2 and "--since" in err
    assert not (tmp_path / "x.parquet").exists()
    _rewrite_line(0, lambda s: s.replace('"symbol":"SYM0"', '"symbol":"SYMX"'))
    code, _, err = qcli("audit", "export", "--output", str(tmp_path / "y.parquet"))
    assert code == 1 and "seq 0" in err
    assert not (tmp_path / "y.parquet").exists()


def test_no_fsync_on_the_append_path_and_close_fsyncs(qcli_home, tmp_path):
    """Not a timing budget (that lives in benchmarks/): the append path never waits on fsync."""
    led = AuditLedger(tmp_path / "l.jsonl", fsync_interval_s=10.0)
    for i in range(50):
        led.append([entry(i)])
    assert led.fsyncs == 0  # the background flusher is still inside its window
    led.close()
    assert led.fsyncs >= 1
    assert os.path.getsize(tmp_path / "l.jsonl") > 0


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(min_value=1, max_value=15),
    data=st.data(),
)
def test_property_any_altered_prediction_is_named_exactly(qcli_home, n, data):
    """Whatever record is altered, and to whatever other value, verify names exactly that record."""
    import tempfile

    k = data.draw(st.integers(min_value=0, max_value=n - 1), label="k")
    new = data.draw(st.floats(allow_nan=False, allow_infinity=False, width=64), label="new")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.jsonl"
        with AuditLedger(path, fsync_interval_s=0.001) as led:
            for i in range(n):
                led.append([entry(i)])
        assert verify_ledger(path)["records"] == n
        lines = path.read_text().splitlines()
        rec = json.loads(lines[k])
        if rec["prediction"] == new:
            new = new + 1.0
        rec["prediction"] = new
        lines[k] = json.dumps(rec)
        path.write_text("\n".join(lines) + "\n")
        res = verify_ledger(path)
    assert res["ok"] is False
    assert (res["first_broken"]["seq"], res["records"]) == (k, k)


def test_export_keeps_offline_fallbacks_and_untimed_records(qcli_home, tmp_path, qcli):
    """`fallback` is null, "missing" or "stale"; an adoption by an older quantcli has no time."""
    adopted = {"event": "adopted", "adopted_records": 0}  # as older versions wrote it
    odd = entry(3) | {"prediction": True, "recorded_at": "not a time"}
    with AuditLedger() as led:
        led.append([adopted])
        led.append([entry(0), entry(1) | {"fallback": "missing"}, entry(2) | {"fallback": "stale"}])
        led.append([odd])
    out = tmp_path / "all.parquet"
    code, _, err = qcli("audit", "export", "--output", str(out))
    assert code == 0, err
    frame = pl.read_parquet(out)
    assert frame["fallback"].to_list() == [None, None, "missing", "stale", None]
    assert frame["event"].to_list() == ["adopted"] + ["prediction"] * 4
    assert frame["recorded_at"][0] is None
    assert json.loads(frame["details"][0]) == {"adopted_records": 0}
    # a value its column cannot hold is kept verbatim in details, not lost
    assert frame["prediction"][4] is None and frame["recorded_at"][4] is None
    assert json.loads(frame["details"][4]) == {"prediction": True, "recorded_at": "not a time"}
    since = tmp_path / "since.parquet"
    code, _, err = qcli("audit", "export", "--since", "2026-01-01", "--output", str(since))
    assert code == 0, err
    assert pl.read_parquet(since)["fallback"].to_list() == [None, "missing", "stale"]
