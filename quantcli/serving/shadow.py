"""Shadow scoring: a second version scores every request off the request's path.

Each scored symbol is one audit-ledger record (``event: "shadow"``) holding both predictions, so
a candidate can be compared with production on live traffic before it serves anything.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from quantcli.audit import features_sha256

if TYPE_CHECKING:
    from quantcli.serving.predict import Predictor

log = logging.getLogger("quantcli.serving")
SHADOW_BATCH = 64  # requests scored per ledger write by the shadow worker
SHADOW_DELAY_S = 0.002


class ShadowScorer:
    """Scores requests with the shadow arm on a background thread, off the request's path.

    Each scored symbol is one ledger record (``event: "shadow"``) holding both predictions.
    The queue is bounded: when the shadow model falls behind, requests are dropped (counted in
    ``dropped``) rather than slowing production or growing memory.
    """

    def __init__(self, predictor: Predictor, maxsize: int = 10_000) -> None:
        self.predictor = predictor
        self.queue: queue.Queue[tuple | None] = queue.Queue(maxsize=maxsize)
        self.scored = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="qcli-shadow", daemon=True)
        self._thread.start()

    def submit(self, item: tuple) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every submitted request is scored (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self.drain(timeout=5.0)
        self.queue.put(None)
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            # let the request that queued this finish sending its answer first, then drain what
            # is waiting: one ledger write for many requests keeps the worker's share of the
            # interpreter lock (and so its cost to the requests) small
            if batch[0] is not None:
                time.sleep(SHADOW_DELAY_S)
            while len(batch) < SHADOW_BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            try:
                if items:
                    self._score(items)
            except Exception:  # a broken shadow model must never take the service down
                self.failed += sum(len(item[3]) for item in items)
                log.exception("shadow scoring failed")
            finally:
                for _ in batch:
                    self.queue.task_done()
            if len(items) < len(batch):
                return

    def _score(self, items: list[tuple]) -> None:
        records = []
        now = datetime.now(UTC).isoformat()
        for shadow, prod, request_id, syms, feats, X, preds in items:
            if shadow.feature_names != prod.feature_names:
                feats = self.predictor.store.get_online_features(
                    syms, feature_refs=list(shadow.feature_names)
                )
                X = shadow.runtime.validate(feats.values)
            shadow_preds = shadow.runtime.predict_array(X)
            records += [
                {
                    "recorded_at": now,
                    "event": "shadow",
                    "request_id": request_id,
                    "source": "shadow",
                    "alias": self.predictor.alias,
                    "symbol": sym,
                    "feature_ts": feats.feature_ts[i],
                    "features_sha256": features_sha256(feats.values[i]),
                    "shadow_prediction": float(shadow_preds[i]),
                    "shadow_version": shadow.version,
                    "production_prediction": float(preds[i]),
                    "production_version": prod.version,
                    "model_name": prod.tags["model_name"],
                }
                for i, sym in enumerate(syms)
            ]
        self.predictor.ledger.append(records)
        self.scored += len(records)


__all__ = ["ShadowScorer"]
