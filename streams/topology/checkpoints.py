"""Signed audit checkpoints: every few seconds, on revocation and on stop.

The checkpoint itself is built and signed by the pure core
(streams/audit/checkpoint.py); this shell takes the heads the sealer holds and
produces one record per audit partition through the gate's one producer, after
the events it lists (one producer keeps each partition in order).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from streams import keys
from streams.audit.checkpoint import Checkpointer, heads_by_partition, writer_id
from streams.errors import KeyFileError

if TYPE_CHECKING:
    from streams.kafka.sink import Sink
    from streams.metrics import Metrics
    from streams.settings import Settings
    from streams.topology.sealer import Sealer

log = logging.getLogger(__name__)


class Checkpoints:
    """Writes the checkpoints of the chains the sealer holds."""

    def __init__(self, settings: Settings, *, sealer: Sealer, sink: Sink, metrics: Metrics) -> None:
        self.sealer = sealer
        self.sink = sink
        self.metrics = metrics
        self.topic = settings.topic("audit")
        self.checkpointer: Checkpointer | None = None
        try:
            signer = keys.gate_signer(settings)
        except KeyFileError as exc:
            # Decisions do not depend on it, so the gate still runs; the trail then has
            # no checkpoints (verify --max-gap reports it) and this says why, loudly.
            log.error("audit checkpoints are OFF: %s", exc)  # noqa: TRY400 - not a crash
            return
        self.checkpointer = Checkpointer(
            signer, writer_id(), host=settings.audit_host, index=settings.audit_index
        )
        log.info("audit checkpoints as writer %s, key %s", self.checkpointer.writer, signer.key_id)

    def write(self, *, final: bool = False) -> int:
        """A checkpoint of every chain held, per audit partition; how many were written.

        Synchronous: the heads read and the records produced with no ``await`` between.
        """
        if self.checkpointer is None:
            return 0
        held = self.sealer.held()
        if not held:
            return 0
        now = dt.datetime.now(tz=dt.UTC)
        records = self.checkpointer.seal(heads_by_partition(held), now, final=final)
        for partition, key, record in records:
            self.sink.produce(self.topic, record, key=key.encode(), partition=partition)
            self.metrics.inc(self.metrics.audit_events, "checkpoint")
        return len(records)

    async def give_up(self) -> int:
        """Partitions revoked or the worker stopping: a final checkpoint, the heads
        forgotten (they are the next owner's now), and everything flushed; the number
        of records still in flight."""
        self.write(final=True)
        self.sealer.release()
        return await self.sink.flush(seconds=10.0)
