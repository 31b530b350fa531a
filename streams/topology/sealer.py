"""Sealing audit events onto this worker's hash chains, one chain per input topic-partition.

A chain is named by what it seals (``proposals:3``, streams/audit/chain.py): one
writer each, by the consumer group's assignment. The audit topic is each chain's
own log: a worker re-syncs the heads of its chains from it on assignment
(streams/audit/resync.py) before it seals anything.
A changelogged table keeps a checkpoint of each head, written at most once a second,
used only when the topic could not be read.
"""

from __future__ import annotations

import time
from typing import Any

from faust.streams import current_event

from streams.audit.chain import ChainHead, seal_json
from streams.handlers import AuditDraft
from streams.settings import Settings


class Sealer:
    """The heads of the chains this worker writes, and the sealing of drafts onto them."""

    def __init__(self, settings: Settings, checkpoints: Any) -> None:
        self.settings = settings
        self.checkpoints = checkpoints  # Faust table: chain -> head dict
        self._heads: dict[str, ChainHead] = {}
        self._synced: dict[str, ChainHead] = {}
        self._checkpointed: dict[str, float] = {}

    def adopt(self, chains: set[str], heads: dict[str, ChainHead]) -> None:
        """The heads read from the audit topic for a new assignment's chains."""
        self._heads.clear()
        self._synced.clear()
        for chain in chains:
            self._synced[chain] = heads.get(chain, ChainHead.empty(chain))

    def held(self) -> dict[str, ChainHead]:
        """The head of every chain this worker holds (what a checkpoint signs)."""
        return {**self._synced, **self._heads}

    def release(self) -> None:
        """Forget every head: the chains go to their next owner (partitions revoked)."""
        self._heads.clear()
        self._synced.clear()

    def _head(self, chain: str) -> ChainHead:
        head = self._heads.get(chain)
        if head is not None:
            return head
        # First event since this worker got the partition.
        synced = self._synced.get(chain)
        if synced is not None:
            # The topic's last record is the truth, ahead of the checkpoint or behind it
            # (an event sealed but lost in a crash never happened).
            return synced
        # The re-sync could not read the topic: fall back to the checkpoint.
        stored = self.checkpoints.get(chain)
        return ChainHead.from_dict(stored) if stored else ChainHead.empty(chain)

    def seal(self, chain: str, drafts: tuple[AuditDraft, ...]) -> tuple[str, list[bytes]]:
        """Seal ``drafts`` in order onto ``chain``: (chain, records).

        The new head is kept only once every draft is sealed, so a failure leaves the
        chain as it was. Synchronous on purpose: reading the head, sealing and storing
        the new head happen with no ``await`` between them, so agents sharing a chain
        cannot interleave inside it.
        """
        head = self._head(chain)
        records: list[bytes] = []
        for draft in drafts:
            record, head = seal_json(
                head,
                kind=draft.kind,
                event_id=draft.event_id,
                actor=draft.actor,
                at=draft.at,
                proposal_id=draft.proposal_id,
                decision_id=draft.decision_id,
                data=draft.data,
                fields=draft.fields,
                host=self.settings.audit_host,
                index=self.settings.audit_index,
            )
            records.append(record)
        self._heads[chain] = head
        self._synced.pop(chain, None)
        # A table can only be written inside stream iteration (the timer's events wait
        # for the next agent event to be checkpointed); once a second per chain.
        now = time.monotonic()
        if now - self._checkpointed.get(chain, -1e9) >= 1.0 and current_event() is not None:
            self._checkpointed[chain] = now
            self.checkpoints[chain] = head.to_dict()
        return chain, records
