"""Walk the ledger: the hash chain, the signatures, the signed head; name the first break."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantcli.audit._chain import (
    GENESIS_HASH,
    canonical_bytes,
    legacy_record_statement,
    record_line,
    record_statement,
)
from quantcli.audit._head import HeadState, SignedHead, head_path, ledger_path, read_head_state
from quantcli.errors import InputError, IntegrityError, NotFoundError
from quantcli.integrity import public_keys, verify_message
from quantcli.results import Result

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def verify_record_sig(seq: int, digest: str, sig: str, keys: dict[str, Any]) -> str:
    """The fingerprint of the key that signed record ``seq``; :class:`IntegrityError` if none.

    Records written before record and head statements were separated signed the legacy
    statement; it is accepted here, on records, and never for a head.
    """
    try:
        return verify_message(record_statement(seq + 1, digest), sig, "ledger", keys=keys)
    except IntegrityError as exc:
        try:
            legacy = legacy_record_statement(seq + 1, digest)
            return verify_message(legacy, sig, "ledger", keys=keys)
        except IntegrityError:
            raise exc from None


def check_record(
    raw: bytes, expected_seq: int | None, prev_hash: str | None, keys: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` when the stored line ``raw`` is intact, else ``(None, reason)``.

    ``expected_seq``/``prev_hash`` ``None`` skip the link checks (the writer's tail check).
    Never raises on hostile bytes.
    """
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
            verify_record_sig(seq, digest, sig, keys)
        except IntegrityError as exc:
            return None, f"its ledger signature is invalid: {exc.message}"
    return rec, None


@dataclass(frozen=True, kw_only=True)
class LedgerVerification(Result):
    """The verdict of :func:`verify_ledger`; ``passed`` (``ok`` in the JSON) when nothing broke.

    ``records`` counts the intact records before the first break, ``head_hash`` is the hash of
    the last of them (``None`` when broken), ``last_anchored`` the ``{"seq", "hash"}`` of the
    last record a valid signature covers, ``unanchored_tail`` the records after it,
    ``signed_head`` the verified head (or ``None``), ``pinned_seq`` the seq of ``expect_head``,
    and ``first_broken`` ``None`` or ``{"kind": record | tail | truncated | head | pin, "line":
    1-based line, "seq": the seq expected there, "reason": ...}``; ``reasons`` holds its reason.
    """

    path: str
    records: int
    head_hash: str | None
    last_anchored: dict[str, Any] | None
    unanchored_tail: int
    signed_head: dict[str, Any] | None
    expect_head: str | None
    pinned_seq: int | None
    first_broken: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.passed,
            "records": self.records,
            "head_hash": self.head_hash,
            "last_anchored": self.last_anchored,
            "unanchored_tail": self.unanchored_tail,
            "signed_head": self.signed_head,
            "expect_head": self.expect_head,
            "pinned_seq": self.pinned_seq,
            "first_broken": self.first_broken,
        }

    def message(self) -> str:
        b = self.first_broken or {}
        where = (
            f" at record seq {b['seq']} (line {b['line']})"
            if b.get("kind") in ("record", "tail")
            else ""
        )
        return f"{self.path}: broken{where}"

    def failure_hint(self) -> str | None:
        anchored = self.last_anchored
        return (
            f"{self.records} records before it are intact; last anchored record: "
            + (f"seq {anchored['seq']}" if anchored else "none")
            + f"; unanchored tail: {self.unanchored_tail} records"
        )


@dataclass
class _Walk:
    """The state of one pass over the records."""

    prev: str = GENESIS_HASH
    expected: int = 0  # the next seq, i.e. the intact records so far
    broken: dict[str, Any] | None = None
    last_signed: tuple[int, str] | None = None
    pin_seq: int | None = None
    pin_found: bool = False
    head_matches: bool = False

    @property
    def first_unsigned(self) -> int:
        return 0 if self.last_signed is None else self.last_signed[0] + 1


def verify_ledger(
    path: str | os.PathLike[str] | None = None,
    *,
    expect_head: str | None = None,
    keys: dict[str, Any] | None = None,
) -> LedgerVerification:
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
    LedgerVerification
        ``passed`` and the first break, if any (see the class); ``to_dict()`` gives the JSON keys
        ``path``, ``ok``, ``records``, ``head_hash``, ``last_anchored``, ``unanchored_tail``,
        ``signed_head``, ``expect_head``, ``pinned_seq`` and ``first_broken``.
    """
    p = Path(path) if path is not None else ledger_path()
    if expect_head is not None and not _HEX64.match(expect_head):
        raise InputError(
            f"--expect-head: {expect_head[:80]!r} is not a 64-digit lower-case hex hash",
            hint="use the head_hash printed by `qcli audit anchor`",
        )
    keys = keys if keys is not None else public_keys("ledger")
    with _open_ledger(p, keys) as fh:
        size, state = _snapshot(fh, p, keys)
        head = state.head
        walk = _walk_records(_lines(fh, size), keys, head, expect_head)
    intact = walk.expected
    tail = intact - walk.first_unsigned
    if walk.broken is None:
        intact = _check_end(walk, state, p, tail, expect_head)
    broken = walk.broken
    if broken is not None and broken["kind"] == "record":
        intact = broken["seq"]
    last = walk.last_signed
    return LedgerVerification(
        passed=broken is None,
        reasons=() if broken is None else (broken["reason"],),
        path=str(p),
        records=intact,
        head_hash=walk.prev if broken is None else None,
        last_anchored=None
        if last is None or (broken is not None and last[0] >= intact)
        else {"seq": last[0], "hash": last[1]},
        unanchored_tail=tail,
        signed_head=head.to_dict() if head is not None else None,
        expect_head=expect_head,
        pinned_seq=walk.pin_seq,
        first_broken=broken,
    )


def _open_ledger(p: Path, keys: dict[str, Any]):
    """The ledger, open for reading; a deleted ledger whose head remains is an
    :class:`IntegrityError`."""
    if not p.exists() and head_path(p).exists():
        state = read_head_state(head_path(p), keys)
        head = state.head or state.legacy
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
        fh = open(p, "rb")  # noqa: SIM115 - the caller's `with` closes it
        if p.is_dir():
            raise IsADirectoryError(21, "Is a directory")
    except (IsADirectoryError, PermissionError) as exc:
        raise InputError(f"{p}: cannot read the ledger ({exc.strerror})") from None
    return fh


def _snapshot(fh: Any, p: Path, keys: dict[str, Any]) -> tuple[int, HeadState]:
    """The ledger's size and its head, read together under a shared lock.

    Writers append and rewrite the head inside one exclusive lock, so the pair is consistent;
    the records up to that size never change afterwards (the file only grows), so the walk
    needs no lock and never holds up a writer.
    """
    fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
    try:
        return os.fstat(fh.fileno()).st_size, read_head_state(head_path(p), keys)
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _lines(fh: Any, size: int) -> Iterator[tuple[bytes, bool]]:
    """``(line without newline, complete)`` for the first ``size`` bytes, read in chunks so a
    ledger of any size is walked in bounded memory."""
    left, rest = size, b""
    while left > 0:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for line in parts:
            yield line, True
    if rest:
        yield rest, False


def _walk_records(
    lines: Iterator[tuple[bytes, bool]],
    keys: dict[str, Any],
    head: SignedHead | None,
    expect_head: str | None,
) -> _Walk:
    """Check the records in order; stop at the first broken one."""
    walk = _Walk(
        head_matches=head is not None and head.count == 0 and head.head_hash == GENESIS_HASH,
        pin_found=expect_head == GENESIS_HASH,  # every ledger starts from the empty one
    )
    for i, (raw, complete) in enumerate(lines, start=1):
        expected = walk.expected
        if not complete:
            rec, reason = None, "incomplete record (no trailing newline): a write was cut short"
        else:
            rec, reason = check_record(raw, expected, walk.prev, keys)
        if reason is not None:
            walk.broken = _record_break(walk, i, reason)
            return walk
        assert rec is not None
        walk.prev = rec["hash"]
        if "sig" in rec:
            walk.last_signed = (expected, walk.prev)
        if head is not None and expected == head.count - 1:
            walk.head_matches = walk.prev == head.head_hash
        if expect_head is not None and walk.prev == expect_head:
            walk.pin_seq, walk.pin_found = expected, True
        walk.expected += 1
    return walk


def _record_break(walk: _Walk, line: int, reason: str) -> dict[str, Any]:
    """The break at record ``walk.expected``, named at the first record no signature vouches for."""
    first, expected = walk.first_unsigned, walk.expected
    if "ledger signature" in reason:
        return _broken(
            "record",
            first + 1,
            first,
            f"records seq {first}..{expected} are not covered by a valid signature "
            f"(seq {expected}: {reason.split(': ', 1)[-1]}); one of them was altered",
        )
    if first < expected:  # no signature vouches for the records since the last one
        reason += (
            f"; records seq {first}..{expected - 1} before it are not covered by a "
            "signature, so they cannot be trusted either"
        )
        return _broken("record", first + 1, first, f"seq {expected}: {reason}")
    return _broken("record", line, expected, reason)


def _check_end(walk: _Walk, state: HeadState, p: Path, tail: int, expect_head: str | None) -> int:
    """Every record is intact: check the end against the signed head and the pin. Sets
    ``walk.broken`` on a break; returns the count of records that remain trusted.

    The head must count exactly the records the file holds: the writer rewrites it inside the
    append's lock and verify reads both under that lock, so a shorter head is never honest
    (accepting one would accept any cut the head of another ledger could be made to fit).
    """
    intact = walk.expected
    head = state.head
    if head is not None and head.count > intact:
        first = intact - tail
        unverifiable = (
            f"; records seq {first}..{intact - 1} after the last signature cannot be verified"
            if tail
            else ""
        )
        walk.broken = _broken(
            "truncated",
            first + 1,
            first,
            f"the ledger ends after {intact} records but its signed head counts {head.count}: "
            f"{head.count - intact} trailing record(s) were removed{unverifiable}",
        )
        return first
    if tail > 0:
        first = intact - tail
        walk.broken = _broken(
            "tail",
            first + 1,
            first,
            f"record seq {first} and the {tail - 1} after it carry no valid ledger signature: "
            "appended without the ledger key",
        )
        return first
    if head is None:
        advice = (
            "; run `qcli audit adopt` to re-sign it"
            if state.legacy is not None
            else " (missing, unreadable, edited, or not signed by a ledger key in the keyring)"
            if state.problem is None
            else ""
        )
        walk.broken = _broken(
            "head",
            intact + 1,
            intact,
            f"no valid signed head: {head_path(p).name} {state.problem or 'is invalid'}{advice}",
        )
        return intact
    if head.count < intact:
        walk.broken = _broken(
            "head",
            head.count + 1,
            head.count,
            f"the signed head counts {head.count} records but the ledger holds {intact}: the "
            "head was replaced (or a writer died between writing records and their head)",
        )
        return head.count
    if not walk.head_matches:
        last = max(head.count - 1, 0)
        walk.broken = _broken(
            "head",
            last + 1,
            last,
            f"record seq {last} is not the record the signed head names (the ledger was rewritten)",
        )
        return last
    if expect_head is not None and not walk.pin_found:
        walk.broken = _broken(
            "pin",
            intact + 1,
            intact,
            f"the pinned head {expect_head[:16]}... is not in the ledger: it was truncated or "
            "rewritten before that record",
        )
    return intact


def _broken(kind: str, line: int, seq: int, reason: str) -> dict[str, Any]:
    return {"kind": kind, "line": line, "seq": seq, "reason": reason}
