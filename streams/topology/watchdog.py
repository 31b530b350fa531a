"""The stall watchdog: a backstop against a consumer that stops serving a partition.

Faust once left partitions unserved after a rebalance until the next one (the cause
is fixed in streams/topology/transport.py); nothing was lost, but nothing was decided
either. A worker whose assigned input partition has input waiting and whose committed
offset has not moved for ``stall_seconds`` logs the partition's Faust and aiokafka
state at CRITICAL and exits; a supervisor restarts it, and the group gives the
partition to a worker that serves it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from streams.topology.assignment import Assignment, Fatal
from streams.topology.diagnose import partition_state
from streams.topology.pending import progress, stalled

log = logging.getLogger(__name__)


class Watchdog:
    """Watches the committed offsets of the agents' input partitions."""

    def __init__(
        self,
        app: Any,
        assignment: Assignment,
        *,
        inputs: frozenset[str],
        bootstrap: str,
        stall_seconds: float,
        fatal: Fatal,
        busy: Any,
        groups: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.assignment = assignment
        self.inputs = inputs  # table changelogs and Faust's own topics have no commits
        self.bootstrap = bootstrap
        self.stall_seconds = stall_seconds
        self.fatal = fatal
        self.busy = busy  # () -> bool: True while the worker catches up on state
        self.progress: dict[tuple[str, int], tuple[int, float]] = {}
        # Topics whose offsets another group holds (the proposals read in lanes).
        self.groups = dict(groups or {})

    def reset(self) -> None:
        """Start a new watch (a new assignment)."""
        self.progress.clear()

    async def check(self) -> None:
        """One look at the committed offsets; exits the worker on a stall."""
        if not self.assignment.ready.is_set() or self.busy():
            return  # a worker still catching up on state is slow, not stalled
        tps = {
            (tp.topic, tp.partition) for tp in self.assignment.assigned if tp.topic in self.inputs
        }
        by_group: dict[str, set[tuple[str, int]]] = {}
        for tp in tps:
            by_group.setdefault(self.groups.get(tp[0], self.app.conf.id), set()).add(tp)
        offsets: dict[tuple[str, int], tuple[int, int]] = {}
        try:
            for group, group_tps in by_group.items():
                offsets |= await asyncio.get_running_loop().run_in_executor(
                    None,
                    functools.partial(progress, client=self.assignment.client),
                    self.bootstrap,
                    group,
                    group_tps,
                )
        except Exception as exc:
            log.warning("stall watchdog could not read offsets: %s", exc)
            return
        if not self.assignment.ready.is_set():
            return  # a rebalance began meanwhile: its assignment starts a new watch
        owned = {(tp.topic, tp.partition) for tp in self.assignment.assigned}
        offsets = {tp: value for tp, value in offsets.items() if tp in owned}
        now = time.monotonic()
        for topic, partition in stalled(self.progress, offsets, now=now, after=self.stall_seconds):
            committed, end = offsets[(topic, partition)]
            log.critical("stalled: %s", partition_state(self.app, topic, partition))
            self.fatal(
                RuntimeError(
                    f"{topic}[{partition}] is assigned here and has input up to offset {end}, "
                    f"but its committed offset stayed at {committed} for "
                    f"{self.stall_seconds:.0f}s or more (stalled consumer)"
                )
            )
