"""Partition assignment and revocation: what this worker owns, and the re-reads that
must finish before it handles anything of a new assignment."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from faust.types import TP

from streams.audit.chain import ChainHead, chain_for
from streams.audit.resync import chain_heads
from streams.keys import PublicKeys
from streams.state.records import PendingEntry
from streams.topology.pending import load_pending

log = logging.getLogger(__name__)

Fatal = Callable[[Exception], None]


class Assignment:
    """The partitions this worker owns and whether their state is in place (``ready``).

    On assignment the re-reads (the audit chains' heads, the pending approvals of the
    lifecycle partitions) run in a task of their own; agents and the timer wait for
    ``ready``, so no event is sealed on a head another worker moved on and no answer is
    judged without its pending entry. Inside Faust's assignment callback they would
    hold up the whole rebalance (Faust awaits its callbacks) for two reads of the
    broker. (A partition stall once blamed on that had another cause, fixed in
    streams/topology/transport.py.)
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        group: str,
        sources: Mapping[str, str],
        lifecycle_topic: str,
        audit_topic: str,
        on_ready: Callable[
            [set[str], dict[str, ChainHead], dict[int, dict[str, PendingEntry]]], None
        ],
        flush: Callable[[], Any],
        fatal: Fatal,
        gate_keys: PublicKeys | None = None,
        client: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        # Kafka security settings of every reader (streams.kafka.security).
        self.client = dict(client or {})
        self.group = group
        # Input topic (full name) -> logical name: each assigned partition of one is a
        # chain this worker writes (``proposals:3``).
        self.sources = dict(sources)
        self.gate_keys = gate_keys
        self.lifecycle_topic = lifecycle_topic
        self.audit_topic = audit_topic
        self.on_ready = on_ready
        self.flush = flush
        self.fatal = fatal
        self.assigned: set[Any] = set()
        # Topics Faust does not read (those read in lanes, streams/topology/lanes.py):
        # this worker owns their partitions with the numbers Faust assigned it of
        # ``mirror_from``; the lanes keep the lifecycle offsets in ``pending_group``.
        self.mirrored: frozenset[str] = frozenset()
        self.mirror_from = ""
        self.pending_group = group
        self.ready = asyncio.Event()
        self._generation = 0
        self._task: asyncio.Task[None] | None = None

    def owns(self, tp: Any) -> bool:
        """Whether this worker is assigned topic-partition ``tp``."""
        return tp in self.assigned

    async def on_revoked(self, _sender: Any, *args: Any, signal: Any, **_kw: Any) -> None:
        """Stop sealing audit events until the heads of the new assignment are known,
        and put every record already sealed on the broker before the partitions move:
        their next owner re-syncs its chain heads from the audit topic."""
        del signal
        self.ready.clear()
        self._generation += 1  # an assignment re-sync still running is now stale
        revoked: set[Any] = args[0] if args else set()
        self.assigned -= revoked
        left = await self.flush()
        if left:
            log.warning("%d records still queued when partitions were revoked", left)

    async def on_assigned(self, _sender: Any, *args: Any, signal: Any, **_kw: Any) -> None:
        """Start re-reading the state of the new assignment, and return at once."""
        del signal
        self.ready.clear()
        assigned: set[Any] = set(args[0]) if args else set()
        numbers = {tp.partition for tp in assigned if tp.topic == self.mirror_from}
        assigned |= {TP(topic, p) for topic in self.mirrored for p in numbers}
        self.assigned = set(assigned)
        chains = {
            chain_for(self.sources[tp.topic], tp.partition)
            for tp in assigned
            if tp.topic in self.sources
        }
        owned = {tp.partition for tp in assigned if tp.topic == self.lifecycle_topic}
        self._generation += 1
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.create_task(
            self._resync(self._generation, chains, owned), name="assignment-resync"
        )

    def _read_heads(self, chains: set[str]) -> dict[str, ChainHead]:
        wanted: dict[int, set[str]] = {}
        for chain in chains:
            wanted.setdefault(int(chain.rsplit(":", 1)[1]), set()).add(chain)
        heads, stats = chain_heads(
            self.bootstrap, self.audit_topic, wanted, keys=self.gate_keys, client=self.client
        )
        log.info(
            "audit heads of %d chains in %d partitions: %d records in %d windows, %.3fs",
            len(chains),
            stats.partitions,
            stats.records,
            stats.windows,
            stats.seconds,
        )
        return heads

    async def _resync(self, generation: int, chains: set[str], owned: set[int]) -> None:
        """The re-reads of one assignment; ``ready`` is set once they are in place.

        If either cannot be read (three tries), the worker exits and is restarted:
        sealing onto an unconfirmed head could fork a chain, and running without the
        open approvals would refuse their answers and page nobody on their timeouts.
        """
        started = time.monotonic()
        pending = await self._reread(
            "pending approvals",
            functools.partial(load_pending, client=self.client),
            self.bootstrap,
            self.lifecycle_topic,
            self.pending_group,
            owned,
        )
        heads = await self._reread("audit chain heads", self._read_heads, chains)
        if pending is None or heads is None or generation != self._generation:
            return  # exiting, or a newer assignment (or a revocation) superseded this one
        self.on_ready(chains, heads, pending)
        log.info("assignment ready after %.2fs", time.monotonic() - started)
        self.ready.set()

    async def _reread(self, what: str, read: Callable[..., Any], *args: Any) -> Any:
        """``read(*args)`` off the event loop, tried three times; ``None`` after exiting."""
        loop = asyncio.get_running_loop()
        for attempt in range(3):
            try:
                return await loop.run_in_executor(None, read, *args)
            except Exception as exc:
                if attempt == 2:
                    self.fatal(RuntimeError(f"cannot re-read the {what}: {exc}"))
                    return None
                log.warning("re-reading the %s failed (%s); trying again", what, exc)
                await asyncio.sleep(1.0 + attempt)
        return None
