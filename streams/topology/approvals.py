"""The pending approvals and abort windows of this worker's lifecycle partitions.

Folded from the ``lifecycle`` log (streams/topology/pending.py re-reads it on every
assignment); an index of open approvals by deadline lets the timer escalate the
soonest first without scanning them all.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator
from typing import Any

from streams.kafka.admin import LIFECYCLE_RETENTION_MS
from streams.state import lifecycle
from streams.state.records import PendingEntry

log = logging.getLogger(__name__)


class Approvals:
    """Pending entries by decision id, their partitions, and their deadlines."""

    def __init__(self) -> None:
        self.pending: dict[str, PendingEntry] = {}
        self.partition: dict[str, int] = {}
        # Open approvals by deadline; the same as a heap, soonest first. Heap entries
        # whose deadline changed or closed are dropped when they surface (the dict is
        # the truth).
        self._deadlines: dict[str, float] = {}
        self._due: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self.pending)

    def get(self, decision_id: str) -> PendingEntry | None:
        """The pending entry of a decision, if this worker holds it."""
        return self.pending.get(decision_id)

    def adopt(self, loaded: dict[int, dict[str, PendingEntry]]) -> None:
        """The entries re-read for a new assignment replace everything held."""
        self.pending.clear()
        self.partition.clear()
        self._deadlines.clear()
        self._due.clear()
        for partition, entries in loaded.items():
            for entry in entries.values():
                self.store(partition, entry)
        log.info("%d pending entries re-read from the lifecycle log", len(self.pending))

    def fold(self, partition: int, record: Any) -> None:
        """A lifecycle record read from the log: ``open`` or a newer ``entry``."""
        entry = lifecycle.fold(self.pending, record)
        if entry is not None:  # None: a redelivery, an update already applied, an old tick
            self.store(partition, entry)

    def store(self, partition: int, entry: PendingEntry) -> None:
        """Hold ``entry`` as the pending entry of its decision, on ``partition``."""
        decision_id = entry["decision_id"]
        self.pending[decision_id] = entry
        self.partition[decision_id] = partition
        if lifecycle.is_open_approval(entry):
            deadline = float(entry["timeout_at"])
            if self._deadlines.get(decision_id) != deadline:
                self._deadlines[decision_id] = deadline
                heapq.heappush(self._due, (deadline, decision_id))
        else:
            self._deadlines.pop(decision_id, None)

    def due(self, now: float) -> Iterator[str]:
        """Decision ids whose approval deadline passed, soonest first.

        The caller escalates each (storing the entry with its next deadline) or calls
        :meth:`close` when nothing was due after all.
        """
        while self._due and self._due[0][0] <= now:
            _, decision_id = heapq.heappop(self._due)
            deadline = self._deadlines.get(decision_id)
            if deadline is None or deadline > now:
                continue  # closed, or its deadline moved on (pushed again then)
            yield decision_id

    def close(self, decision_id: str) -> None:
        """Stop watching a decision's deadline."""
        self._deadlines.pop(decision_id, None)

    def evict(self, now: float) -> None:
        """Forget entries older than the lifecycle log keeps them (a worker that stays
        assigned for weeks must not hold every decision it ever saw)."""
        horizon = now - LIFECYCLE_RETENTION_MS / 1000
        for decision_id, entry in list(self.pending.items()):
            if entry["opened_at"] < horizon and not lifecycle.is_open_approval(entry):
                del self.pending[decision_id]
                self.partition.pop(decision_id, None)
