"""The prediction audit ledger: append-only, hash-chained, verifiable, exportable.

Every prediction quantcli serves (``qcli serve`` or ``qcli predict``) is appended as one JSON line
to ``$QCLI_HOME/audit/ledger.jsonl``. Each record carries the sha256 of the previous record, so
editing, inserting or deleting any record breaks the chain at that point, which
:func:`verify_ledger` reports (``qcli audit verify``). See ``docs/audit.md``.
"""

from __future__ import annotations

from quantcli.audit._chain import GENESIS_HASH, features_sha256, record_hash
from quantcli.audit._export import export_ledger
from quantcli.audit._ledger import AuditLedger, ledger_path
from quantcli.audit._verify import verify_ledger

__all__ = [
    "GENESIS_HASH",
    "AuditLedger",
    "export_ledger",
    "features_sha256",
    "ledger_path",
    "record_hash",
    "verify_ledger",
]
