"""Walk the ledger: the hash chain, the signatures, the signed head; name the first break."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from quantcli.audit._chain import GENESIS_HASH, canonical_bytes, head_statement, record_line
from quantcli.audit._head import head_path, read_head
from quantcli.errors import InputError, IntegrityError, NotFoundError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_record(
    raw: bytes, expected_seq: int | None, prev_hash: str | None, keys: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` when the stored line ``raw`` is intact, else ``(None, reason)``.

    ``expected_seq``/``prev_hash`` ``None`` skip the link checks (the writer's tail check).
    Never raises on hostile bytes.
    """
    from quantcli.integrity import verify_message

    try:
        rec = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None, "not a valid JSON record"
    if not isinstance(rec, dict):
        return None, "not a valid JSON record"
    seq, prev, digest, sig = rec.get("seq"), rec.get("prev_hash"), rec.get("hash"), rec.get("sig")
    if type(seq) is not int or not isinstance(prev, str) or not isinstance(digest, str):
        return None, "missing or malformed seq, prev_hash or hash"
    if "sig" in rec and not isinstance(sig, str):
        return None, "malformed sig"
    if expected_seq is not None and seq != expected_seq:
        return None, f"seq is {seq}, expected {expected_seq} (a record was removed, added or moved)"
    if prev_hash is not None and prev != prev_hash:
        return None, "prev_hash does not match the previous record's hash (chain broken)"
    try:
        body = canonical_bytes(rec)
    except (ValueError, RecursionError):
        return None, "holds NaN, Infinity or nesting the writer never stores (altered)"
    if hashlib.sha256(body).hexdigest() != digest:
        return None, "content does not match its hash (the record was altered)"
    if record_line(body, digest, sig) != raw:
        return None, "not stored in its canonical form (the line was altered)"
    if sig is not None:
        try:
            verify_message(head_statement(seq + 1, digest), sig, "ledger", keys=keys)
        except IntegrityError as exc:
            return None, f"its ledger signature is invalid: {exc.message}"
    return rec, None


def _ledger_keys() -> dict[str, Any]:
    from quantcli.integrity import public_keys

    return public_keys("ledger")


def verify_ledger(
    path: str | os.PathLike[str] | None = None,
    *,
    expect_head: str | None = None,
    keys: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify every record of the ledger, its signatures and its signed head, in order.

    A record is intact when its line is the canonical JSON the writer stores, its ``seq`` is the
    previous ``seq`` + 1 (0 first), its ``prev_hash`` the previous record's ``hash``
    (:data:`GENESIS_HASH` first), its ``hash`` the sha256 of its canonical form, and its ``sig``,
    when present, a valid ledger-key signature of ``(seq + 1, hash)``. Every append signs its last
    record, so every record must be followed (or be) a signed one: records after the last valid
    signature are an *unanchored tail* (appended without the key). The signed head
    (``<ledger>.head``) must exist, count no more records than the ledger holds, and name the hash
    of record ``count - 1``. ``expect_head`` pins a head hash printed earlier by ``qcli audit
    anchor``: the ledger must still contain it.

    Returns
    -------
    dict
        ``path``, ``ok``, ``records`` (intact records before the first break), ``head_hash`` (hash
        of the last of them), ``last_anchored`` (``{"seq", "hash"}`` of the last record a valid
        signature covers, or ``None``), ``unanchored_tail`` (records after it), ``signed_head``
        (the verified head, or ``None``), ``expect_head`` and ``first_broken``: ``None`` or
        ``{"kind": record | tail | truncated | head | pin, "line": 1-based line, "seq": the seq
        expected there, "reason": ...}``.
    """
    p = Path(path) if path is not None else _default_path()
    if expect_head is not None and not _HEX64.match(expect_head):
        raise InputError(
            f"--expect-head: {expect_head[:80]!r} is not a 64-digit lower-case hex hash",
            hint="use the head_hash printed by `qcli audit anchor`",
        )
    if not p.exists() and head_path(p).exists():
        head = read_head(head_path(p), keys if keys is not None else _ledger_keys())
        counted = f"its signed head counts {head.count} records" if head else "its head remains"
        raise IntegrityError(
            f"{p}: the audit ledger was deleted ({counted})",
            hint=f"restore it from a backup; {head_path(p).name} is still there",
        )
    if not p.exists():
        raise NotFoundError(
            f"no audit ledger at {p}",
            hint="the ledger is created by the first prediction (`qcli predict` or `qcli serve`)",
        )
    try:
        data = p.read_bytes()
    except (IsADirectoryError, PermissionError) as exc:
        raise InputError(f"{p}: cannot read the ledger ({exc.strerror})") from None
    keys = keys if keys is not None else _ledger_keys()
    head = read_head(head_path(p), keys)
    lines = data.split(b"\n")
    trailing_partial = lines[-1] != b""
    if not trailing_partial:
        lines = lines[:-1]
    prev, expected, broken = GENESIS_HASH, 0, None
    last_signed: tuple[int, str] | None = None
    pin_seq = None
    head_matches = head is not None and head.count == 0
    for i, raw in enumerate(lines, start=1):
        if trailing_partial and i == len(lines):
            rec, reason = None, "incomplete record (no trailing newline): a write was cut short"
        else:
            rec, reason = check_record(raw, expected, prev, keys)
        if reason is not None and "ledger signature" in reason:
            first = 0 if last_signed is None else last_signed[0] + 1
            broken = _broken(
                "record",
                first + 1,
                first,
                f"records seq {first}..{expected} are not covered by a valid signature "
                f"(seq {expected}: {reason.split(': ', 1)[-1]}); one of them was altered",
            )
            break
        if reason is not None:
            first = 0 if last_signed is None else last_signed[0] + 1
            if first < expected:  # no signature vouches for the records since the last one
                reason += (
                    f"; records seq {first}..{expected - 1} before it are not covered by a "
                    "signature, so they cannot be trusted either"
                )
                broken = _broken("record", first + 1, first, f"seq {expected}: {reason}")
            else:
                broken = _broken("record", i, expected, reason)
            break
        assert rec is not None
        prev = rec["hash"]
        if "sig" in rec:
            last_signed = (expected, prev)
        if head is not None and expected == head.count - 1:
            head_matches = prev == head.head_hash
        if expect_head is not None and prev == expect_head:
            pin_seq = expected
        expected += 1
    intact = expected
    tail = intact - (last_signed[0] + 1 if last_signed else 0)
    if broken is None and head is not None and head.count > intact:
        first = intact - tail
        unverifiable = (
            f"; records seq {first}..{intact - 1} after the last signature cannot be verified"
            if tail
            else ""
        )
        broken = _broken(
            "truncated",
            first + 1,
            first,
            f"the ledger ends after {intact} records but its signed head counts {head.count}: "
            f"{head.count - intact} trailing record(s) were removed{unverifiable}",
        )
        intact = first
    if broken is None and tail > 0:
        first = intact - tail
        broken = _broken(
            "tail",
            first + 1,
            first,
            f"record seq {first} and the {tail - 1} after it carry no valid ledger signature: "
            "appended without the ledger key",
        )
        intact = first
    if broken is None and head is not None and not head_matches:
        broken = _broken(
            "head",
            head.count,
            head.count - 1,
            f"record seq {head.count - 1} is not the record the signed head names "
            "(the ledger was rewritten)",
        )
        intact = head.count - 1
    if broken is None and head is None:
        broken = _broken(
            "head",
            intact + 1,
            intact,
            f"no valid signed head: {head_path(p).name} is missing, unreadable or not signed by "
            "a ledger key in the keyring",
        )
    if broken is None and expect_head is not None and pin_seq is None:
        broken = _broken(
            "pin",
            intact + 1,
            intact,
            f"the pinned head {expect_head[:16]}... is not in the ledger: it was truncated or "
            "rewritten before that record",
        )
    if broken is not None and broken["kind"] == "record":
        intact = broken["seq"]
    return {
        "path": str(p),
        "ok": broken is None,
        "records": intact,
        "head_hash": prev if broken is None else None,
        "last_anchored": None
        if last_signed is None or (broken is not None and last_signed[0] >= intact)
        else {"seq": last_signed[0], "hash": last_signed[1]},
        "unanchored_tail": tail,
        "signed_head": head.to_dict() if head is not None else None,
        "expect_head": expect_head,
        "pinned_seq": pin_seq,
        "first_broken": broken,
    }


def _broken(kind: str, line: int, seq: int, reason: str) -> dict[str, Any]:
    return {"kind": kind, "line": line, "seq": seq, "reason": reason}


def _default_path() -> Path:
    from quantcli.audit._ledger import ledger_path

    return ledger_path()
