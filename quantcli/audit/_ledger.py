"""The ledger writer: append-only JSON lines, hash-chained, signed, safe across processes.

Signing (see ``docs/audit.md`` for the threat model):

* Every :meth:`AuditLedger.append` signs its last record with the ledger key (``sig``: an Ed25519
  signature of "the first ``seq + 1`` records end in ``hash``") and, in the same lock, writes the
  next generation of the signed head ``<ledger>.head`` (its own statement, its own signature:
  see ``_head.py``). Records therefore never sit unsigned: an append made without the key, a
  truncation of any length, a rewrite from any record on, all break a signature or disagree with
  the head.
* Opening a ledger checks its end against the signed head (truncation, forged or unsigned tail,
  a torn last line) and refuses to extend a broken ledger with :class:`LedgerBrokenError` (exit
  2): ``qcli predict`` and ``qcli serve`` do not write past a break. ``qcli audit verify`` walks
  every record.

Durability policy (``durability="batch"``, the default):

* Every append hands its records to the kernel with one ``write(2)`` on an ``O_APPEND``
  descriptor *before it returns*, i.e. before the prediction is answered. Once ``write`` returns
  the bytes are in the kernel's page cache: killing the service (even ``kill -9``) cannot lose
  them.
* A background thread ``fsync``\\ s the ledger and its head at most ``fsync_interval_s``
  (default 20 ms) after an append (group commit), so an OS crash or power loss loses at most the
  last ``fsync_interval_s`` of records. ``close()`` fsyncs synchronously. ``durability="always"``
  fsyncs inside every append, for deployments where a disk flush per prediction is affordable.

Appends from several threads are serialised by a lock; appends from several processes (the HTTP
service and a CLI ``qcli predict`` at the same time) by an exclusive ``flock`` on the file, and a
writer that finds the file grew since its last append re-reads and re-checks the tail so the
chain stays linear.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import threading
from pathlib import Path
from typing import Any

from quantcli.audit._chain import GENESIS_HASH, canonical_bytes, record_line, record_statement
from quantcli.audit._head import (
    HeadState,
    head_path,
    ledger_path,
    read_head_state,
    write_new_head,
    write_slot,
)
from quantcli.audit._verify import check_record
from quantcli.errors import InputError, IntegrityError
from quantcli.integrity import load_private_key, private_key_path, public_keys, sign_message

_DURABILITY = ("batch", "always")


class LedgerBrokenError(IntegrityError):
    """The ledger fails its checks: nothing is appended to it (exit code 2).

    A prediction that cannot be recorded is not served; the reason names what broke, and
    ``qcli audit verify`` locates it. The ledger is never repaired automatically.
    """

    exit_code = 2


def _json_clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: store them as null (the hash covers exactly what is stored)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    return value


def refusal(path: Path, what: str) -> LedgerBrokenError:
    """The error refusing to extend the ledger at ``path``, broken as ``what`` says."""
    return LedgerBrokenError(
        f"{path}: {what}; refusing to append to a broken audit ledger",
        hint="run `qcli audit verify` to locate the break; the ledger is never repaired "
        "automatically (move it aside to start a new one)",
    )


class AuditLedger:
    """Appends prediction records to the hash-chained, signed ledger.

    Parameters
    ----------
    path
        The ledger file; defaults to :func:`ledger_path` (``$QCLI_HOME/audit/ledger.jsonl``).
        The signed head is ``<path>.head``.
    durability
        ``"batch"``: ``write(2)`` per append, ``fsync`` by a background thread at most
        ``fsync_interval_s`` later. ``"always"``: ``fsync`` inside every append.
    fsync_interval_s
        Group-commit window of the ``"batch"`` policy, in seconds (> 0).

    Raises
    ------
    LedgerBrokenError
        The existing ledger's end does not match its signed head (see the module docstring).
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
        if not fsync_interval_s > 0 or not math.isfinite(fsync_interval_s):
            raise InputError(
                f"`fsync_interval_s` must be positive, got `fsync_interval_s={fsync_interval_s}`."
            )
        self.path = Path(path) if path is not None else ledger_path()
        self.head_path = head_path(self.path)
        self.durability = durability
        self._interval = fsync_interval_s
        self._key_stamp = self._stamp_key()
        self._key = load_private_key("ledger")
        self._keys = public_keys("ledger")
        self._closed = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() and self.head_path.exists():
            raise refusal(self.path, "the ledger was deleted but its signed head remains")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # a head is created only with a new (empty) ledger: never beside existing records
            flags = os.O_RDWR | (os.O_CREAT if os.fstat(self._fd).st_size == 0 else 0)
            self._head_fd = os.open(self.head_path, flags, 0o644)
        except FileNotFoundError:
            os.close(self._fd)
            err = refusal(
                self.path,
                f"no signed head ({self.head_path.name} is missing) beside existing records",
            )
            err.hint = (
                "a ledger written before records were signed is taken over with `qcli audit "
                "adopt`; otherwise run `qcli audit verify` to locate the break"
            )
            raise err from None
        except OSError:
            os.close(self._fd)
            raise
        self._closed = False
        self._lock = threading.Lock()
        self._size = -1  # file size after our last append; -1 forces a tail read
        self._mtime = -1  # and its mtime: a file cut and regrown to that size has another
        self._next_seq = 0
        self._prev_hash = GENESIS_HASH
        self._ledger_id: str | None = None  # of the head, and its generation, once read
        self._gen = -1
        self.records_appended = 0
        self.fsyncs = 0
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._check_at_open()
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        except BaseException:
            self._close_fds()
            raise
        self._dirty = threading.Event()
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None
        if durability == "batch":
            self._flusher = threading.Thread(
                target=self._flush_loop, name="qcli-audit-fsync", daemon=True
            )
            self._flusher.start()

    # -- keys -------------------------------------------------------------------------------
    @staticmethod
    def _stamp_key() -> tuple[int, int, int] | None:
        try:
            st = os.stat(private_key_path("ledger"))
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _follow_key_rotation(self) -> None:
        """Sign with the current ledger key: ``qcli audit rotate-key`` replaces the key file
        under a long-lived writer, which would otherwise keep signing with the retired key."""
        stamp = self._stamp_key()
        if stamp != self._key_stamp:
            self._key = load_private_key("ledger")
            self._keys = public_keys("ledger")
            self._key_stamp = self._stamp_key()

    def _reload_keyring(self) -> None:
        self._keys = public_keys("ledger")

    # -- chain state ------------------------------------------------------------------------
    def _check_at_open(self) -> None:
        """The ledger's end against its signed head; a new ledger gets a new signed head."""
        size = os.fstat(self._fd).st_size
        if size == 0 and os.fstat(self._head_fd).st_size == 0:
            self._ledger_id, self._gen = write_new_head(self._head_fd, 0, GENESIS_HASH, self._key)
            self._next_seq, self._prev_hash, self._size = 0, GENESIS_HASH, 0
            self._mtime = os.fstat(self._fd).st_mtime_ns
            return
        self._load_tail(size)
        self._check_head(read_head_state(self.head_path, self._keys))

    def _check_head(self, state: HeadState) -> None:
        """The head must count exactly the records read and name the last one."""
        if state.head is None and state.problem and "does not verify" in state.problem:
            # another writer may sign with a key published after this one read the keyring
            self._reload_keyring()
            state = read_head_state(self.head_path, self._keys)
        head = state.head
        if head is None:
            err = refusal(self.path, f"no valid signed head: {self.head_path.name} {state.problem}")
            err.hint = (
                "a ledger written before records were signed, or before record and head "
                "signatures were separated, is taken over with `qcli audit adopt`; otherwise "
                "run `qcli audit verify` to locate the break"
            )
            raise err
        assert head.generation is not None and head.ledger_id is not None
        if self._next_seq < head.count:
            raise refusal(
                self.path,
                f"the ledger ends after {self._next_seq} records but its signed head counts "
                f"{head.count} (it was truncated)",
            )
        if self._next_seq > head.count:
            raise refusal(
                self.path,
                f"its signed head counts {head.count} records but the ledger holds "
                f"{self._next_seq} (the head was replaced)",
            )
        if self._prev_hash != head.head_hash:
            raise refusal(self.path, "its last record is not the one the signed head names")
        if self._ledger_id is not None and head.ledger_id != self._ledger_id:
            raise refusal(self.path, "its signed head is another ledger's (it was replaced)")
        if head.generation < self._gen:
            raise refusal(
                self.path,
                f"its signed head (generation {head.generation}) is older than the one this "
                f"writer wrote (generation {self._gen}): the head was rolled back",
            )
        self._ledger_id, self._gen = head.ledger_id, head.generation

    def _load_tail(self, size: int) -> None:
        """Read and check the last record (seq, hash, signature) of a file of ``size`` bytes."""
        if size == 0:
            self._next_seq, self._prev_hash, self._size = 0, GENESIS_HASH, 0
            self._mtime = os.fstat(self._fd).st_mtime_ns
            return
        chunk = 4096
        while True:
            start = max(0, size - chunk)
            data = os.pread(self._fd, size - start, start)
            if not data.endswith(b"\n"):
                raise refusal(self.path, "the last record is incomplete (no trailing newline)")
            body = data[:-1]
            cut = body.rfind(b"\n")
            if cut >= 0 or start == 0:
                last = body[cut + 1 :]
                break
            chunk *= 4
        rec, reason = check_record(last, None, None, self._keys)
        if rec is None and reason is not None and "not in the ledger keyring" in reason:
            # another writer signs with a key published after this one read the keyring
            self._reload_keyring()
            rec, reason = check_record(last, None, None, self._keys)
        if rec is None:
            raise refusal(self.path, f"the last record is not intact: {reason}")
        if "sig" not in rec:
            raise refusal(
                self.path,
                f"the last record (seq {rec['seq']}) carries no ledger signature: it was "
                "appended without the ledger key",
            )
        self._next_seq = rec["seq"] + 1
        self._prev_hash = rec["hash"]
        self._size = size
        self._mtime = os.fstat(self._fd).st_mtime_ns

    def _write_head(self, count: int, head_hash: str) -> None:
        assert self._ledger_id is not None
        write_slot(self._head_fd, self._ledger_id, self._gen + 1, count, head_hash, self._key)
        self._gen += 1

    def _check_paths(self) -> os.stat_result:
        """``fstat`` of the open ledger, after checking that its path and its head's still name
        the files this writer has open: records written to a deleted or replaced file would be
        answered but recorded nowhere anyone reads."""
        st = os.fstat(self._fd)
        for path, fd, name in (
            (self.path, self._fd, "ledger"),
            (self.head_path, self._head_fd, "head"),
        ):
            try:
                on_disk = os.stat(path)
            except FileNotFoundError:
                raise refusal(
                    self.path, f"its {name} file was deleted while this writer had it open"
                ) from None
            mine = st if fd == self._fd else os.fstat(fd)
            if (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino):
                raise refusal(
                    self.path, f"its {name} file was replaced while this writer had it open"
                )
        return st

    # -- writing ----------------------------------------------------------------------------
    def append(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append ``entries`` (one record each) and return them with ``seq``/``prev_hash``/``hash``.

        All records of one call go out in a single ``write(2)``: they are chained consecutively
        even when another process appends at the same time. The last one carries ``sig``.
        Raises :class:`LedgerBrokenError` when someone else left the ledger's end broken.
        """
        if self._closed:
            raise RuntimeError("AuditLedger is closed")
        if not entries:
            return []
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._follow_key_rotation()
                st = self._check_paths()
                size = st.st_size
                if size != self._size or st.st_mtime_ns != self._mtime:
                    if size < self._size:
                        raise refusal(
                            self.path, f"it shrank from {self._size} to {size} bytes (truncated)"
                        )
                    self._load_tail(size)
                    self._check_head(read_head_state(self.head_path, self._keys))
                out, lines = [], []
                seq, prev = self._next_seq, self._prev_hash
                last = len(entries) - 1
                for k, entry in enumerate(entries):
                    rec = dict(entry)
                    rec.pop("sig", None)
                    rec.pop("hash", None)
                    rec["seq"] = seq
                    rec["prev_hash"] = prev
                    try:
                        body = canonical_bytes(rec)
                    except ValueError:  # NaN/inf somewhere (rare): store null, as documented
                        rec = _json_clean(rec)
                        body = canonical_bytes(rec)
                    digest = hashlib.sha256(body).hexdigest()
                    rec["hash"] = digest
                    sig = None
                    if k == last:
                        statement = record_statement(seq + 1, digest)
                        sig = sign_message(statement, "ledger", key=self._key)
                        rec["sig"] = sig
                    lines.append(record_line(body, digest, sig))
                    out.append(rec)
                    prev = digest
                    seq += 1
                data = b"\n".join(lines) + b"\n"
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                st = os.fstat(self._fd)
                self._size, self._mtime = st.st_size, st.st_mtime_ns
                self._next_seq, self._prev_hash = seq, prev
                self._write_head(seq, prev)
                self.records_appended += len(out)
                if self.durability == "always":
                    os.fsync(self._fd)
                    os.fsync(self._head_fd)
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
            os.fsync(self._fd)  # close() joins this thread before closing the descriptors
            os.fsync(self._head_fd)
            self.fsyncs += 1
            if self._closed:
                return

    def flush(self) -> None:
        """``fsync`` now (synchronously)."""
        if not self._closed:
            os.fsync(self._fd)
            os.fsync(self._head_fd)
            self.fsyncs += 1

    def _close_fds(self) -> None:
        for fd in (self._fd, self._head_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Stop the background flusher, ``fsync`` and close the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._dirty.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        os.fsync(self._fd)
        os.fsync(self._head_fd)
        self.fsyncs += 1
        self._close_fds()

    def __enter__(self) -> AuditLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
