"""Anchor a verified ledger's head elsewhere, and adopt a ledger written before signing."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantcli.audit._chain import GENESIS_HASH, canonical_bytes, head_statement, record_line
from quantcli.audit._head import head_path, ledger_path, write_slot
from quantcli.audit._ledger import refusal
from quantcli.audit._verify import check_record, verify_ledger
from quantcli.errors import InputError, IntegrityError
from quantcli.integrity import load_private_key, public_keys, sign_message
from quantcli.results import Result


@dataclass(frozen=True, kw_only=True)
class LedgerAnchor(Result):
    """The signed head of a verified ledger, to keep where the ledger's host cannot edit it.

    ``count`` records end in ``head_hash``; ``sig`` is the ledger key's signature of
    ``statement`` by the key with fingerprint ``key`` (``None`` for an empty ledger's head).
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
    sig = None
    if check.last_anchored is not None:
        lines = Path(check.path).read_bytes().splitlines()
        sig = json.loads(lines[check.last_anchored["seq"]]).get("sig")
    sig = sig or (check.signed_head or {}).get("sig")
    return LedgerAnchor(
        passed=True,
        path=check.path,
        count=check.records,
        head_hash=check.head_hash,
        sig=sig,
        key=(sig or "::").split(":")[1] or None,
        statement=head_statement(check.records, check.head_hash).decode("ascii"),
    )


def adopt_unsigned_ledger(path: str | os.PathLike[str] | None = None) -> LedgerAdoption:
    """Sign a ledger written before records were signed, so it can be verified and extended.

    Such a ledger has a hash chain but no signatures and no signed head; ``AuditLedger`` refuses
    it. Adoption walks the chain (every record must be intact and unsigned, the head file must
    not exist), then appends one signed record ``{"event": "adopted", "adopted_records": N}``:
    through the chain, its signature vouches for the N records as they are *now*. Edits made
    before adoption cannot be detected; every edit after it can.
    """
    p = Path(path) if path is not None else ledger_path()
    if not p.is_file():
        raise InputError(f"no audit ledger at {p} to adopt")
    hp = head_path(p)
    if hp.exists() and hp.stat().st_size > 0:
        raise InputError(
            f"{p} already has a signed head ({hp.name}): nothing to adopt",
            hint="run `qcli audit verify`",
        )
    key = load_private_key("ledger")
    keys = public_keys("ledger")
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
            if "sig" in rec:
                raise refusal(p, f"record seq {seq} is already signed but the head is missing")
            prev, seq = rec["hash"], seq + 1
        rec = {"event": "adopted", "adopted_records": seq, "seq": seq, "prev_hash": prev}
        body = canonical_bytes(rec)
        digest = hashlib.sha256(body).hexdigest()
        sig = sign_message(head_statement(seq + 1, digest), "ledger", key=key)
        os.write(fd, record_line(body, digest, sig) + b"\n")
        os.fsync(fd)
        head_fd = os.open(hp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_slot(head_fd, seq + 1, digest, sig)
            os.fsync(head_fd)
        finally:
            os.close(head_fd)
    finally:
        os.close(fd)
    return LedgerAdoption(
        passed=True, path=str(p), adopted_records=seq, head_hash=digest, key=key[1]
    )
