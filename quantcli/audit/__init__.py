"""The prediction audit ledger: append-only, hash-chained, signed, verifiable, exportable.

Every prediction quantcli serves (``qcli serve`` or ``qcli predict``) is appended as one JSON line
to ``$QCLI_HOME/audit/ledger.jsonl``. Each record carries the sha256 of the previous record; the
last record of every append is signed with the ledger key, and the signed head
(``ledger.jsonl.head``) holds the record count and last hash. Editing, inserting, deleting,
reordering or truncating records, or appending without the key, is reported by
:func:`verify_ledger` (``qcli audit verify``). See ``docs/audit.md``.
"""

from __future__ import annotations

from quantcli.audit._anchor import (
    LedgerAdoption,
    LedgerAnchor,
    adopt_unsigned_ledger,
    anchor_ledger,
)
from quantcli.audit._chain import GENESIS_HASH, features_sha256, record_hash
from quantcli.audit._export import LedgerExport, export_ledger
from quantcli.audit._head import SignedHead, head_path, ledger_path, read_head
from quantcli.audit._ledger import AuditLedger, LedgerBrokenError
from quantcli.audit._verify import LedgerVerification, verify_ledger

__all__ = [
    "GENESIS_HASH",
    "AuditLedger",
    "LedgerAdoption",
    "LedgerAnchor",
    "LedgerBrokenError",
    "LedgerExport",
    "LedgerVerification",
    "SignedHead",
    "adopt_unsigned_ledger",
    "anchor_ledger",
    "export_ledger",
    "features_sha256",
    "head_path",
    "ledger_path",
    "read_head",
    "record_hash",
    "verify_ledger",
]
