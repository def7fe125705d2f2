"""The ledger writer: append-only JSON lines, hash-chained, safe across threads and processes.

Durability policy (``durability="batch"``, the default):

* Every :meth:`AuditLedger.append` hands its records to the kernel with one ``write(2)`` on an
  ``O_APPEND`` descriptor *before it returns*, i.e. before the prediction is answered. Once
  ``write`` returns the bytes are in the kernel's page cache: killing the service (even
  ``kill -9``) cannot lose them.
* A background thread ``fsync``\\ s the file at most ``fsync_interval_s`` (default 20 ms) after an
  append (group commit, one ``fsync`` per small batch), so an OS crash or power loss loses at most
  the last ``fsync_interval_s`` of records. ``close()`` fsyncs synchronously.

``fsync`` costs about 4 ms on this machine's disk, far above the sub-millisecond budget a request
may spend on the ledger; ``durability="always"`` (fsync inside every append) is available where
that latency is acceptable (it is what the CLI's one-shot ``qcli predict`` gets via ``close()``).

Appends from several threads are serialised by a lock; appends from several processes (the HTTP
service and a CLI ``qcli predict`` at the same time) by an exclusive ``flock`` on the file, and a
writer that finds the file grew since its last append re-reads the tail so the chain stays linear.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from quantcli import config
from quantcli.audit._chain import GENESIS_HASH, canonical_bytes
from quantcli.errors import InputError, IntegrityError

LEDGER_FILE = "ledger.jsonl"
_DURABILITY = ("batch", "always")


def ledger_path() -> Path:
    """``$QCLI_HOME/audit/ledger.jsonl``."""
    return config.audit_dir() / LEDGER_FILE


def _json_clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: store them as null (the hash covers exactly what is stored)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    return value


class AuditLedger:
    """Appends prediction records to the hash-chained ledger.

    Parameters
    ----------
    path
        The ledger file; defaults to :func:`ledger_path` (``$QCLI_HOME/audit/ledger.jsonl``).
    durability
        ``"batch"``: ``write(2)`` per append, ``fsync`` by a background thread at most
        ``fsync_interval_s`` later. ``"always"``: ``fsync`` inside every append.
    fsync_interval_s
        Group-commit window of the ``"batch"`` policy, in seconds (> 0).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        durability: str = "batch",
        fsync_interval_s: float = 0.02,
    ) -> None:
        if durability not in _DURABILITY:
            raise InputError(
                f"`durability` must be one of {_DURABILITY}, got `durability={durability!r}`."
            )
        if not fsync_interval_s > 0:
            raise InputError(
                f"`fsync_interval_s` must be positive, got `fsync_interval_s={fsync_interval_s}`."
            )
        self.path = Path(path) if path is not None else ledger_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durability = durability
        self._interval = fsync_interval_s
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()
        self._size = -1  # file size after our last append; -1 forces a tail read
        self._next_seq = 0
        self._prev_hash = GENESIS_HASH
        self.records_appended = 0
        self.fsyncs = 0
        self._closed = False
        self._dirty = threading.Event()
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None
        if durability == "batch":
            self._flusher = threading.Thread(
                target=self._flush_loop, name="qcli-audit-fsync", daemon=True
            )
            self._flusher.start()

    # -- chain state ------------------------------------------------------------------------
    def _load_tail(self, size: int) -> None:
        """Read the last record (seq, hash) of a file of ``size`` bytes written by anyone."""
        if size == 0:
            self._next_seq, self._prev_hash, self._size = 0, GENESIS_HASH, 0
            return
        chunk = 4096
        while True:
            start = max(0, size - chunk)
            data = os.pread(self._fd, size - start, start)
            if not data.endswith(b"\n"):
                raise IntegrityError(
                    f"{self.path}: the last record is incomplete (no trailing newline)",
                    hint="run `qcli audit verify` to locate it; the ledger is never repaired "
                    "automatically",
                )
            body = data[:-1]
            cut = body.rfind(b"\n")
            if cut >= 0 or start == 0:
                last = body[cut + 1 :]
                break
            chunk *= 4
        try:
            rec = json.loads(last)
            self._next_seq = int(rec["seq"]) + 1
            self._prev_hash = str(rec["hash"])
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(
                f"{self.path}: the last record is not a valid ledger record",
                hint="run `qcli audit verify` to locate the first broken record",
            ) from None
        self._size = size

    # -- writing ----------------------------------------------------------------------------
    def append(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append ``entries`` (one record each) and return them with ``seq``/``prev_hash``/``hash``.

        All records of one call go out in a single ``write(2)``: they are chained consecutively
        even when another process appends at the same time.
        """
        if self._closed:
            raise RuntimeError("AuditLedger is closed")
        if not entries:
            return []
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(self._fd).st_size
                if size != self._size:
                    self._load_tail(size)
                out, lines = [], []
                seq, prev = self._next_seq, self._prev_hash
                for entry in entries:
                    rec = dict(entry)
                    rec["seq"] = seq
                    rec["prev_hash"] = prev
                    try:
                        body = canonical_bytes(rec)
                    except ValueError:  # NaN/inf somewhere (rare): store null, as documented
                        rec = _json_clean(rec)
                        body = canonical_bytes(rec)
                    rec["hash"] = hashlib.sha256(body).hexdigest()
                    # serialise once: the canonical body with the hash appended as last key
                    lines.append(body[:-1] + b',"hash":"' + rec["hash"].encode() + b'"}')
                    out.append(rec)
                    prev = rec["hash"]
                    seq += 1
                data = b"\n".join(lines) + b"\n"
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                self._size = size + len(data)
                self._next_seq, self._prev_hash = seq, prev
                self.records_appended += len(out)
                if self.durability == "always":
                    os.fsync(self._fd)
                    self.fsyncs += 1
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        if self.durability == "batch":
            self._dirty.set()
        return out

    def _flush_loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._closed:
                return
            # group commit: one fsync for everything in the window (close() cuts it short)
            self._closing.wait(self._interval)
            self._dirty.clear()
            os.fsync(self._fd)  # close() joins this thread before closing the descriptor
            self.fsyncs += 1
            if self._closed:
                return

    def flush(self) -> None:
        """``fsync`` now (synchronously)."""
        if not self._closed:
            os.fsync(self._fd)
            self.fsyncs += 1

    def close(self) -> None:
        """Stop the background flusher, ``fsync`` and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._dirty.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        os.fsync(self._fd)
        self.fsyncs += 1
        os.close(self._fd)

    def __enter__(self) -> AuditLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
