"""Faust with three fixes that keep a rebalance from skipping records: two in its
aiokafka consumer, one in its flow control.

Faust drops fetched records in several places during a rebalance (records of a
partition it has paused, records fetched while its flow is stopped) and relies on
the seek to committed offsets that follows to fetch them again. Two things broke
that, and a partition stalled: its first records were not delivered until the next
rebalance (the crash test on a loaded machine; README, Reliability).

1. **Partitions the group never committed on were not sought.** aiokafka's
   ``seek_to_committed`` seeks only partitions whose committed offset is above 0;
   the others kept aiokafka's position, past the records Faust had dropped. Found
   with the stall watchdog's report (streams/topology/diagnose.py: aiokafka at
   position 1, Faust's read offset and the agent's queue empty, nothing committed)
   and a fetch trace: error-budgets[3] offset 0 fetched while Faust's flow was
   stopped, offsets 1 and 2 delivered after the seek, offset 0 never.
   :meth:`Consumer.seek_to_committed` sends such partitions to their beginning, as
   ``auto_offset_reset="earliest"`` (the gate's setting) would.
2. **aiokafka read the live set of active partitions.** Faust passes its
   ``_active_partitions`` set itself to aiokafka, which reads it on the consumer
   thread while ``fetched_records`` waits up to a second for records; Faust changes
   it on the event loop meanwhile, and aiokafka reads an *empty* set as "every
   partition". During recovery the set does become empty (stream partitions paused,
   changelog partitions resumed, then paused when recovery is done), so a waiting
   fetch drained the paused stream partitions too, and Faust dropped their records.
   :meth:`Consumer._getmany` hands aiokafka a snapshot taken on the event loop.

3. **Faust cleared its queues after the seek.** ``Recovery.on_recovery_completed``
   (and ``_resume_streams``) sends ``on_rebalance_complete``, resumes the stream
   partitions, awaits the seek to committed offsets, and only then resumes its flow
   control, which clears every agent's queue. The flow control is already active
   then (changelog recovery resumed it), so a record fetched during the seek could
   reach a queue and be cleared with aiokafka's position past it (found reading the
   code, not observed). :meth:`App._hold_flow` suspends the flow control on that
   signal; a fetched record waits in Faust's conductor until the resume. The cost:
   a record fetched before its partition's seek is delivered and fetched again
   after it; Faust's read offset lets at most the last of them through twice (the
   same ``decision_id``).

Checked against faust-streaming 0.15.3 and aiokafka 0.14.0 (constraints.txt);
tests/unit/test_transport.py fails if any of the three is removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


class Consumer(driver.Consumer):
    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed = await super().seek_to_committed()
        if self.app.conf.consumer_auto_offset_reset == "earliest":
            # aiokafka left these where they were (it seeks only offsets above 0)
            unplaced = [tp for tp, offset in committed.items() if not offset]
            if unplaced:
                await self._thread.seek_to_beginning(*unplaced)
        return committed

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109 - Faust's signature
        if active_partitions is not None:
            active_partitions = set(active_partitions)
        return await super()._getmany(active_partitions, timeout)


class Transport(driver.Transport):
    Consumer = Consumer


class App(faust.App):
    """A Faust app whose consumer is :class:`Consumer` (producers are unchanged) and
    whose flow control holds from ``on_rebalance_complete`` until Faust resumes it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_rebalance_complete.connect(self._hold_flow)  # type: ignore[arg-type] # faust stub

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    async def _hold_flow(self, _sender: Any, **_kwargs: Any) -> None:
        self.flow_control.suspend()
