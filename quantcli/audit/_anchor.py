"""Anchor a verified ledger's head elsewhere, and adopt a ledger written before signing."""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantcli.audit._chain import (
    GENESIS_HASH,
    canonical_bytes,
    head_statement,
    record_line,
    record_statement,
)
from quantcli.audit._head import head_path, ledger_path, read_head_state, write_new_head
from quantcli.audit._ledger import refusal
from quantcli.audit._verify import check_record, verify_ledger
from quantcli.errors import InputError, IntegrityError
from quantcli.integrity import load_private_key, public_keys, sign_message
from quantcli.results import Result


@dataclass(frozen=True, kw_only=True)
class LedgerAnchor(Result):
    """The signed head of a verified ledger, to keep where the ledger's host cannot edit it.

    ``count`` records end in ``head_hash``; ``sig`` is the ledger key's signature of
    ``statement`` (the head statement, with the ledger's id and the head's generation) by the
    key with fingerprint ``key``.
    """

    path: str
    count: int
    head_hash: str
    sig: str | None
    key: str | None
    statement: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "count": self.count,
            "head_hash": self.head_hash,
            "sig": self.sig,
            "key": self.key,
            "statement": self.statement,
        }


@dataclass(frozen=True, kw_only=True)
class LedgerAdoption(Result):
    """A ledger adopted by :func:`adopt_unsigned_ledger`: ``adopted_records`` records are now
    vouched for by one signed record ending in ``head_hash``, signed by the key ``key``."""

    path: str
    adopted_records: int
    head_hash: str
    key: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "adopted_records": self.adopted_records,
            "head_hash": self.head_hash,
            "key": self.key,
        }


def anchor_ledger(path: str | os.PathLike[str] | None = None) -> LedgerAnchor:
    """Verify the ledger and return its signed head (``qcli audit anchor``).

    ``qcli audit verify --expect-head HASH`` later proves the ledger still contains that record.
    A broken ledger is not anchored: :class:`IntegrityError` (exit code 1) names the break.
    """
    check = verify_ledger(path)
    if not check.passed:
        raise IntegrityError(
            f"{check.path}: not anchoring a broken ledger: {check.first_broken['reason']}",
            hint="run `qcli audit verify` for details",
        )
    head = check.signed_head
    assert head is not None  # a ledger passes only with a valid signed head
    return LedgerAnchor(
        passed=True,
        path=check.path,
        count=check.records,
        head_hash=check.head_hash,
        sig=head["sig"],
        key=head["key"],
        statement=head_statement(
            head["ledger_id"], head["generation"], head["count"], head["head_hash"]
        ).decode("ascii"),
    )


def adopt_unsigned_ledger(path: str | os.PathLike[str] | None = None) -> LedgerAdoption:
    """Sign a ledger written by an older quantcli, so it can be verified and extended.

    Two kinds: a ledger written before records were signed (a hash chain, no signatures, no head
    file), and one written before record and head signatures were separated (its head's
    signature is also its last record's, so it cannot show the ledger was not cut back).
    ``AuditLedger`` and ``verify`` refuse both. Adoption walks the chain (every record intact;
    for the second kind, the old head must match the end), then appends one signed record
    ``{"event": "adopted", "adopted_records": N, "recorded_at": ...}`` and writes a new signed
    head: through the chain, its signature vouches for the N records as they are *now*. Edits
    made before adoption cannot be detected; every edit after it can.
    """
    p = Path(path) if path is not None else ledger_path()
    if not p.is_file():
        raise InputError(f"no audit ledger at {p} to adopt")
    hp = head_path(p)
    key = load_private_key("ledger")
    keys = public_keys("ledger")
    legacy = None
    if hp.exists() and hp.stat().st_size > 0:
        legacy = read_head_state(hp, keys).legacy
        if legacy is None:
            raise InputError(
                f"{p} already has a signed head ({hp.name}): nothing to adopt",
                hint="run `qcli audit verify`",
            )
    fd = os.open(p, os.O_RDWR | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = p.read_bytes()
        if data and not data.endswith(b"\n"):
            raise refusal(p, "the last record is incomplete (no trailing newline)")
        prev, seq = GENESIS_HASH, 0
        for line in data.splitlines():
            rec, reason = check_record(line, seq, prev, keys)
            if rec is None:
                raise refusal(p, f"record seq {seq} is not intact ({reason}): not adopting it")
            if "sig" in rec and legacy is None:
                raise refusal(p, f"record seq {seq} is already signed but the head is missing")
            prev, seq = rec["hash"], seq + 1
        if legacy is not None and (legacy.count, legacy.head_hash) != (seq, prev):
            raise refusal(
                p,
                f"its signed head counts {legacy.count} records, the ledger holds {seq} (or "
                "ends in another record): not adopting it",
            )
        rec = {
            "event": "adopted",
            "adopted_records": seq,
            "recorded_at": datetime.now(UTC).isoformat(),
            "seq": seq,
            "prev_hash": prev,
        }
        body = canonical_bytes(rec)
        digest = hashlib.sha256(body).hexdigest()
        sig = sign_message(record_statement(seq + 1, digest), "ledger", key=key)
        os.write(fd, record_line(body, digest, sig) + b"\n")
        os.fsync(fd)
        head_fd = os.open(hp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_new_head(head_fd, seq + 1, digest, key)
            os.fsync(head_fd)
        finally:
            os.close(head_fd)
    finally:
        os.close(fd)
    return LedgerAdoption(
        passed=True, path=str(p), adopted_records=seq, head_hash=digest, key=key[1]
    )
