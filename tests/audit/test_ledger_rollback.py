"""Cutting the ledger back to an earlier request without the key: every way the heads allow.

A record's signature and the signed head sign different statements, and a head is two
consecutive generations of one ledger, so neither a record's signature, nor the older slot, nor
the head of another ledger signed with the same key can stand for the head of a cut ledger.
"""

from __future__ import annotations

import json

import pytest

from quantcli.audit import (
    AuditLedger,
    LedgerBrokenError,
    adopt_unsigned_ledger,
    head_path,
    ledger_path,
    verify_ledger,
)
from quantcli.audit._chain import canonical_bytes, legacy_record_statement, record_hash, record_line
from quantcli.audit._head import SLOT_BYTES
from quantcli.integrity import load_private_key, sign_message


def rec(i: int) -> dict:
    return {"symbol": f"S{i % 4}", "prediction": 0.25 * i, "request_id": f"r{i}"}


def write(n_requests: int, per_request: int = 2, path=None) -> None:
    with AuditLedger(path) as led:
        for r in range(n_requests):
            led.append([rec(r * per_request + j) for j in range(per_request)])


def lines() -> list[bytes]:
    return ledger_path().read_bytes().splitlines(keepends=True)


def old_slot(count: int, head_hash: str, sig: str) -> bytes:
    """A head slot as the writer before the statement split stored it."""
    body = {"count": count, "head_hash": head_hash, "sig": sig, "signed_at": "x"}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return raw.ljust(SLOT_BYTES - 1, b" ") + b"\n"


def assert_refused(qcli, kind: str | None = None) -> dict:
    res = verify_ledger()
    assert res["ok"] is False, res
    if kind is not None:
        assert res["first_broken"]["kind"] == kind, res["first_broken"]
    code, _, err = qcli("audit", "verify")
    assert code == 1 and "Traceback" not in err
    with pytest.raises(LedgerBrokenError):
        AuditLedger()
    return res


@pytest.mark.parametrize("keep_requests", [1, 2])
def test_a_records_signature_copied_into_the_head_does_not_seal_a_cut(
    qcli_home, qcli, keep_requests
):
    """The review's reproducer: cut after a request, its last record's sig as both head slots."""
    write(4)
    all_lines = lines()
    k = 2 * keep_requests - 1
    last = json.loads(all_lines[k])
    assert "sig" in last
    ledger_path().write_bytes(b"".join(all_lines[: k + 1]))
    slot = old_slot(k + 1, last["hash"], last["sig"])
    head_path(ledger_path()).write_bytes(slot * 2)
    assert_refused(qcli, "head")
    # the same signature dressed as a new-format slot does not verify either
    head = head_path(ledger_path())
    forged = {"count": k + 1, "gen": 9, "head_hash": last["hash"], "ledger_id": "a" * 32}
    forged |= {"sig": last["sig"], "signed_at": "x", "v": 2}
    raw = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    head.write_bytes(raw.ljust(SLOT_BYTES - 1, b" ") + b"\n" + head.read_bytes()[SLOT_BYTES:])
    assert_refused(qcli, "head")
    assert len(lines()) == k + 1  # nothing sealed the cut


def test_blanking_the_newer_slot_and_dropping_the_last_request_is_detected(qcli_home, qcli):
    write(3)
    head = head_path(ledger_path()).read_bytes()
    slots = [json.loads(head[i : i + SLOT_BYTES]) for i in (0, SLOT_BYTES)]
    newer = max(range(2), key=lambda i: slots[i]["gen"])
    assert slots[newer]["count"] == 6 and slots[1 - newer]["count"] == 4
    ledger_path().write_bytes(b"".join(lines()[:4]))
    blank = b" " * (SLOT_BYTES - 1) + b"\n"
    parts = [head[:SLOT_BYTES], head[SLOT_BYTES:]]
    parts[newer] = blank
    head_path(ledger_path()).write_bytes(b"".join(parts))
    res = assert_refused(qcli, "head")
    assert "slot" in res["first_broken"]["reason"]
    # the older slot alone, in either position, is no head either
    head_path(ledger_path()).write_bytes(parts[1 - newer] * 2)
    assert_refused(qcli, "head")


def test_another_ledgers_head_with_the_same_key_does_not_fit(qcli_home, qcli, tmp_path):
    """Ed25519 is deterministic, so a fresh ledger's head would be every fresh ledger's, were it
    not for the random ledger id and the exact count."""
    write(3)
    other = tmp_path / "other" / "ledger.jsonl"
    other.parent.mkdir()
    AuditLedger(other).close()  # a fresh ledger, same key: a genesis head
    fresh = head_path(other).read_bytes()
    own = head_path(ledger_path()).read_bytes()
    all_lines = lines()
    # cut to the first request, with the fresh head: it counts 0 records, the ledger holds 2
    ledger_path().write_bytes(b"".join(all_lines[:2]))
    head_path(ledger_path()).write_bytes(fresh)
    assert_refused(qcli, "head")
    # one slot of ours, one of the fresh ledger's: two ledgers' heads
    head_path(ledger_path()).write_bytes(own[:SLOT_BYTES] + fresh[SLOT_BYTES:])
    assert_refused(qcli, "head")
    head_path(ledger_path()).write_bytes(fresh[:SLOT_BYTES] + own[SLOT_BYTES:])
    assert_refused(qcli, "head")
    # the whole ledger emptied with a fresh head looks like a fresh ledger: only an anchor kept
    # elsewhere tells (docs/audit.md says so)
    ledger_path().write_bytes(b"")
    head_path(ledger_path()).write_bytes(fresh)
    assert verify_ledger()["ok"] is True
    pinned = json.loads(all_lines[1])["hash"]
    code, _, err = qcli("audit", "verify", "--expect-head", pinned)
    assert code == 1 and "pinned head" in err


def test_a_head_counting_fewer_records_than_the_ledger_holds_is_refused(qcli_home, qcli):
    write(1)
    older = head_path(ledger_path()).read_bytes()
    write(1)
    head_path(ledger_path()).write_bytes(older)  # the head rolled back, the records not
    res = assert_refused(qcli, "head")
    assert "signed head counts 2 records but the ledger holds 4" in res["first_broken"]["reason"]


def _old_format_ledger(n: int) -> None:
    """A ledger as the writer before the statement split left it: each record signed with the
    statement its head also signed."""
    key = load_private_key("ledger")
    out, prev = [], "0" * 64
    for seq in range(n):
        body = {**rec(seq), "seq": seq, "prev_hash": prev}
        prev = record_hash(body)
        sig = sign_message(legacy_record_statement(seq + 1, prev), "ledger", key=key)
        out.append(record_line(canonical_bytes(body), prev, sig) + b"\n")
    p = ledger_path()
    p.parent.mkdir(parents=True)
    p.write_bytes(b"".join(out))
    last_sig = json.loads(out[-1])["sig"]
    head_path(p).write_bytes(old_slot(n, prev, last_sig) * 2)


def test_an_old_format_ledger_is_refused_until_adopted_then_extended(qcli_home, qcli):
    _old_format_ledger(3)
    res = verify_ledger()
    assert res["ok"] is False and res["first_broken"]["kind"] == "head"
    assert "qcli audit adopt" in res["first_broken"]["reason"]
    assert res["records"] == 3  # its records and their old signatures still verify
    with pytest.raises(LedgerBrokenError) as exc:
        AuditLedger()
    assert "qcli audit adopt" in exc.value.hint
    code, out, err = qcli("audit", "adopt", "--json")
    assert code == 0, err
    assert json.loads(out)["adopted_records"] == 3
    write(1)
    res = verify_ledger()
    assert res["ok"], res["first_broken"]
    assert res["records"] == 6
    assert json.loads(lines()[3])["event"] == "adopted"
    # after adoption, the old records' signatures no longer make a head
    k = 1
    old = json.loads(lines()[k])
    ledger_path().write_bytes(b"".join(lines()[: k + 1]))
    head_path(ledger_path()).write_bytes(old_slot(k + 1, old["hash"], old["sig"]) * 2)
    assert verify_ledger()["ok"] is False


def test_adoption_refuses_an_old_format_ledger_its_head_does_not_match(qcli_home):
    _old_format_ledger(3)
    ledger_path().write_bytes(b"".join(lines()[:2]))
    with pytest.raises(LedgerBrokenError, match="signed head counts 3"):
        adopt_unsigned_ledger()


def test_the_anchor_of_an_empty_ledger_is_advice_verify_accepts(qcli_home, qcli):
    AuditLedger().close()
    code, out, err = qcli("audit", "anchor")
    assert code == 0, err
    advice = out.strip().splitlines()[-1]
    assert advice == "verify later: qcli audit verify --expect-head " + "0" * 64
    command = advice.split("qcli ", 1)[1].split()
    code, _, err = qcli(*command)
    assert code == 0, err
    write(1)  # every later ledger starts from the empty one
    assert qcli(*command)[0] == 0
    code, out, err = qcli("audit", "anchor", "--json")
    anchor = json.loads(out)
    assert anchor["statement"].startswith("quantcli-ledger-head:v2:")
    assert anchor["sig"] != json.loads(lines()[-1])["sig"]  # the head's, not a record's
