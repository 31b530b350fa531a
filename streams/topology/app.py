"""The Faust app: topics, tables and thin agents around the pure core.

Data flow (every arrow is a Kafka topic; every output goes through one
confluent-kafka producer, ``streams/kafka/sink.py``)::

    proposals ──► [proposals agent] ──► decisions.{execute,approve,assist,manual}
                        │   ▲                 └► lifecycle (L2/L3, keyed by decision id)
                        │   └── state mirror (every worker folds all of ``state``)
    outcomes, error-budgets, control ──► [input agents] ──► state (keyed by table key)
    lifecycle, approvals ──► [lifecycle agent] ──► pending entries in memory,
                        updates back to lifecycle; execute / abort commands; oncall
    every agent, the approval timer ──► audit (hash-chained per partition), dlq

Agents decode, look up state, call the core, send and audit; nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import heapq
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson
from faust.streams import current_event
from pydantic import BaseModel

from streams.audit.chain import ChainHead, seal_json
from streams.errors import InputError, PolicyError
from streams.kafka.admin import LIFECYCLE_RETENTION_MS
from streams.kafka.sink import DeliveryError, Sink
from streams.metrics import Metrics
from streams.models import (
    ApprovalResponse,
    AuditKind,
    ControlCommand,
    DeadLetter,
    Decision,
    ErrorBudgetUpdate,
    ExecuteCommand,
    HistoryRecord,
    OncallEscalation,
    Outcome,
    Proposal,
    decode,
    encode,
)
from streams.models.codec import canonical_json, parse_json
from streams.models.decision import decision_json as dump_decision
from streams.policy import Policy, decision_id_for, evaluate, parse_policy
from streams.settings import Settings
from streams.signing import signature_ok
from streams.state import lifecycle, reducers
from streams.topology.diagnose import partition_state
from streams.topology.mirror import Mirror
from streams.topology.pending import load_pending, progress, stalled
from streams.topology.resync import last_heads
from streams.topology.transport import App

log = logging.getLogger(__name__)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


class Gate:
    """One worker's Faust app and the objects its agents share."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        metrics: Metrics,
        *,
        bootstrap: str,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.metrics = metrics
        self.bootstrap = bootstrap
        (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        self.app = App(
            # The prefix keeps the consumer group and the table changelogs of two
            # deployments (or two tests) on one cluster apart.
            f"{settings.topic_prefix}{settings.app_id}",
            broker=f"kafka://{bootstrap}",
            store=settings.store,
            datadir=str(settings.data_dir / "faust"),
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            web_enabled=False,
            autodiscover=False,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=1.0,
            # A worker killed with SIGKILL leaves the group after this, not after 60 s.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            # A rebalance waits this long for every member to rejoin; a member killed
            # with SIGKILL never does, and its partitions wait with it (default 60 s).
            broker_rebalance_timeout=15.0,
            # Batch produce requests for up to 5 ms: fewer, larger requests; measured
            # 5-17% less CPU per message (throughput varied run to run), for ~5 ms of
            # latency per hop (bench/README.md).
            producer_linger=0.005,
            producer_acks=-1,
            # Do not make a rebalance wait for in-flight events: an agent may be waiting
            # for the audit re-sync of the *next* assignment (deadlock until timeout).
            # Events of partitions this worker lost are skipped instead (_consume).
            stream_wait_empty=False,
            table_standby_replicas=0,
            key_serializer="raw",
            value_serializer="raw",
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
        topic = settings.topic
        # Inputs are Faust topics (agents consume them); outputs are topic names for
        # the sink (streams/kafka/sink.py), which writes every record the gate emits.
        self.t_proposals = self.app.topic(topic("proposals"), **raw)
        self.t_outcomes = self.app.topic(topic("outcomes"), **raw)
        self.t_budgets = self.app.topic(topic("error-budgets"), **raw)
        self.t_control = self.app.topic(topic("control"), **raw)
        # Answers and the decisions they answer, both keyed by decision id: one agent,
        # co-partitioned, so the pending entry and its answers meet on one worker.
        self.t_answers = self.app.topic(topic("lifecycle"), topic("approvals"), **raw)
        # The agents' input topics: the ones the stall watchdog watches (table changelogs
        # and Faust's own topics have no committed offsets of this group).
        self._inputs: frozenset[str] = frozenset(
            name
            for source in (
                self.t_proposals,
                self.t_outcomes,
                self.t_budgets,
                self.t_control,
                self.t_answers,
            )
            for name in source.topics
        )
        self.audit_topic = topic("audit")
        self.state_topic = topic("state")
        self.lifecycle_topic = topic("lifecycle")
        self.dlq_topic = topic("dlq")
        self.oncall_topic = topic("oncall")
        self.routes = {
            route: topic(f"decisions.{route}")
            for route in ("execute", "approve", "assist", "manual")
        }
        self.sink = Sink(bootstrap, linger_ms=settings.linger_ms)
        self.sink.on_fatal = self._fatal
        # Keys and values are JSON in the changelogs (faust picks "json" for str keys).
        table_args: dict[str, Any] = {"key_type": str, "partitions": settings.partitions}
        self.audit_heads = self.app.Table("audit-heads", **table_args)
        # Pending approvals and abort windows of this worker's lifecycle partitions,
        # folded from the lifecycle log (streams/topology/pending.py) on assignment.
        self.pending: dict[str, lifecycle.Entry] = {}
        self._pending_partition: dict[str, int] = {}
        self._evicted_at = time.time()
        self._synced_heads: dict[str, ChainHead] = {}
        self._heads: dict[str, ChainHead] = {}
        self._checkpointed: dict[str, float] = {}
        # Open approvals by deadline, so the timer does not scan the pending table.
        self._deadlines: dict[str, float] = {}
        # The same deadlines as a heap, soonest first; entries whose deadline changed
        # or closed are dropped when they surface (the dict is the truth).
        self._due: list[tuple[float, str]] = []
        self._overdue_logged = -1e9
        self._resynced = asyncio.Event()
        self._generation = 0
        self._resync_task: asyncio.Task[None] | None = None
        self._assigned: set[Any] = set()
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type] # faust stub
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type] # faust stub

        self.mirror = Mirror(bootstrap, topic("state"))
        self.mirror.on_applied = lambda table: self.metrics.state_applied.labels(table).inc()
        self.mirror.listeners.append(self._on_state)

        self.app.agent(self.t_proposals, name="proposals")(self._proposals)
        self.app.agent(self.t_outcomes, name="outcomes")(self._outcomes)
        self.app.agent(self.t_budgets, name="error-budgets")(self._budgets)
        self.app.agent(self.t_control, name="control")(self._control)
        self.app.agent(self.t_answers, name="lifecycle")(self._lifecycle)
        self.app.timer(settings.tick_seconds)(self._tick)
        self.app.timer(min(30.0, settings.stall_seconds / 3))(self._watchdog)
        self._progress: dict[tuple[str, int], tuple[int, float]] = {}
        self.app.task(self._start_mirror)
        self._policy_gauges()

    # ------------------------------------------------------------------ plumbing

    def _check_review_date(self, policy: Policy, now: dt.datetime) -> None:
        """A policy past its review date caps autonomy at 2: say so, loudly, until reviewed."""
        overdue = now.date() > policy.policy.next_review
        self.metrics.policy_overdue.set(1 if overdue else 0)
        if overdue and time.monotonic() - self._overdue_logged > 60.0:
            self._overdue_logged = time.monotonic()
            log.warning(
                "policy %s v%s was due for review on %s: every decision is capped at Level 2 "
                "until a reviewed policy is loaded (escalation policy load)",
                policy.policy.name,
                policy.version,
                policy.policy.next_review,
            )

    async def _on_revoked(self, _sender: Any, *args: Any, signal: Any, **_kw: Any) -> None:
        """Stop sealing audit events until the heads of the new assignment are known,
        and put every record already sealed on the broker before the partitions move:
        their next owner re-syncs its chain heads from the audit topic."""
        del signal
        self._resynced.clear()
        self._generation += 1  # an assignment re-sync still running is now stale
        revoked: set[Any] = args[0] if args else set()
        self._assigned -= revoked
        left = await self.sink.flush(seconds=10.0)
        if left:
            log.warning("%d records still queued when partitions were revoked", left)

    def _fatal(self, error: Exception) -> None:
        """A record could not be written (or a consumer stalled): exit before anything
        more is acknowledged, so that it is processed again after the restart."""
        log.critical("%s; exiting so that the unacknowledged input is redelivered", error)
        logging.shutdown()
        os._exit(70)  # EX_SOFTWARE: no finalisers, no offset commit on the way out

    async def _on_assigned(self, _sender: Any, *args: Any, signal: Any, **_kw: Any) -> None:
        """Start re-reading the state of the new assignment, and return at once.

        The re-reads (the audit chains' heads, the pending approvals of the lifecycle
        partitions) run in a task of their own; agents and the timer wait for it
        (``_resynced``), so no event is sealed on a head another worker moved on and
        no answer is judged without its pending entry. Inside Faust's assignment
        callback they would hold up the whole rebalance (Faust awaits its callbacks)
        for two reads of the broker. (A partition stall once blamed on that had
        another cause, fixed in streams/topology/transport.py.)
        """
        del signal
        self._resynced.clear()
        assigned: set[Any] = args[0] if args else set()
        self._assigned = set(assigned)
        partitions = {
            tp.partition for tp in assigned if tp.topic == self.t_proposals.get_topic_name()
        }
        owned = {tp.partition for tp in assigned if tp.topic == self.lifecycle_topic}
        self._generation += 1
        if self._resync_task is not None:
            self._resync_task.cancel()
        self._resync_task = asyncio.create_task(
            self._resync(self._generation, partitions, owned), name="assignment-resync"
        )

    async def _resync(self, generation: int, partitions: set[int], owned: set[int]) -> None:
        """The re-reads of one assignment; ``_resynced`` is set once they are in place.

        If either cannot be read (three tries), the worker exits and is restarted:
        sealing onto an unconfirmed head could fork a chain, and running without the
        open approvals would refuse their answers and page nobody on their timeouts.
        """
        started = time.monotonic()
        pending = await self._reread(
            "pending approvals",
            load_pending,
            self.bootstrap,
            self.lifecycle_topic,
            self.app.conf.id,
            owned,
        )
        heads = await self._reread(
            "audit chain heads", last_heads, self.bootstrap, self.audit_topic, partitions
        )
        if pending is None or heads is None or generation != self._generation:
            return  # exiting, or a newer assignment (or a revocation) superseded this one
        self._heads.clear()
        self._synced_heads.clear()
        self._progress.clear()
        self._adopt_pending(pending)
        for partition in partitions:
            chain = f"p{partition}"
            self._synced_heads[chain] = heads.get(chain, ChainHead.empty(chain))
        log.info(
            "assignment ready after %.2fs (%d pending entries)",
            time.monotonic() - started,
            len(self.pending),
        )
        self._resynced.set()

    async def _reread(self, what: str, read: Callable[..., Any], *args: Any) -> Any:
        """``read(*args)`` off the event loop, tried three times; ``None`` after exiting."""
        loop = asyncio.get_running_loop()
        for attempt in range(3):
            try:
                return await loop.run_in_executor(None, read, *args)
            except Exception as exc:
                if attempt == 2:
                    self._fatal(RuntimeError(f"cannot re-read the {what}: {exc}"))
                    return None
                log.warning("re-reading the %s failed (%s); trying again", what, exc)
                await asyncio.sleep(1.0 + attempt)
        return None

    def _adopt_pending(self, pending: dict[int, dict[str, lifecycle.Entry]]) -> None:
        self.pending.clear()
        self._pending_partition.clear()
        self._deadlines.clear()
        self._due.clear()
        for partition, entries in pending.items():
            for entry in entries.values():
                self._store_entry(partition, entry)
        log.info("%d pending entries re-read from the lifecycle log", len(self.pending))

    async def _start_mirror(self) -> None:
        await self.mirror.start()

    def _policy_gauges(self) -> None:
        self.metrics.policy_info.clear()
        self.metrics.policy_info.labels(self.policy.version, self.policy.digest).set(1)

    def _on_state(self, table: str, key: str, value: Any) -> None:
        """Keep metrics and the policy in force in step with the mirrored state."""
        if table == "verdicts":
            rate = reducers.ai_fp_rate(value, dt.datetime.now(tz=dt.UTC))
            self.metrics.ai_fp_rate.labels(key).set(rate if rate is not None else 0.0)
        elif table == "policy" and key == "current" and value:
            self._adopt_policy(value)

    def _adopt_policy(self, value: dict[str, Any]) -> None:
        text = value.get("yaml")
        if not isinstance(text, str) or value.get("digest") == self.policy.digest:
            return
        try:
            policy = parse_policy(text, source=f"control:{value.get('by', '?')}")
        except Exception:
            # Validated before it was stored; a bad value here keeps the old policy.
            log.exception("stored policy does not validate; keeping v%s", self.policy.version)
            return
        self.policy = policy
        self._policy_gauges()
        log.info("policy v%s (%s) in force", policy.version, policy.digest[:12])

    def audit(
        self,
        partition: int,
        kind: AuditKind,
        *,
        event_id: str,
        at: dt.datetime,
        actor: str,
        data: dict[str, Any],
        fields: dict[str, str] | None = None,
        proposal_id: str | None = None,
        decision_id: str | None = None,
    ) -> None:
        """Seal one audit event onto this partition's chain and enqueue it.

        Synchronous on purpose: reading the head, sealing and storing the new head
        happen with no ``await`` between them, so agents sharing a partition's chain
        cannot interleave inside it.
        """
        chain = f"p{partition}"
        head = self._heads.get(chain)
        if head is None:  # first event since this worker got the partition
            synced = self._synced_heads.pop(chain, None)
            if synced is not None:
                # The topic's last record is the truth, ahead of the checkpoint or behind
                # it (an event sealed but lost in a crash never happened).
                head = synced
            else:  # the re-sync could not read the topic: fall back to the checkpoint
                stored = self.audit_heads.get(chain)
                head = ChainHead.from_dict(stored) if stored else ChainHead.empty(chain)
        record, new_head = seal_json(
            head,
            kind=kind,
            event_id=event_id,
            actor=actor,
            at=at,
            proposal_id=proposal_id,
            decision_id=decision_id,
            data=data,
            fields=fields or {},
            host=self.settings.audit_host,
            index=self.settings.audit_index,
        )
        self._heads[chain] = new_head
        # The audit topic is the chain's own log: its last record is the head, and a
        # worker re-syncs from it on assignment. The table is a checkpoint, written at
        # most once a second per chain instead of once per event (one changelog
        # record less per event).
        now = time.monotonic()
        # A table can only be written inside stream iteration (the timer's events wait
        # for the next agent event to be checkpointed).
        if now - self._checkpointed.get(chain, -1e9) >= 1.0 and current_event() is not None:
            self._checkpointed[chain] = now
            self.audit_heads[chain] = new_head.to_dict()
        self.sink.produce(self.audit_topic, record, key=chain.encode(), partition=partition)
        self.metrics.inc(self.metrics.audit_events, kind)

    def dead_letter(self, event: Any, error: InputError | Exception, logical_topic: str) -> None:
        """Send the original bytes and the reason to ``dlq``; audit it; count it."""
        message = event.message
        reason: Any = error.kind if isinstance(error, InputError) else "processing"
        value: bytes = message.value if isinstance(message.value, bytes) else b""
        letter = DeadLetter.model_construct(
            schema_version=1,
            reason=reason,
            error=str(error)[:4000],
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key_b64=base64.b64encode(message.key).decode() if message.key else None,
            value_b64=base64.b64encode(value).decode(),
            received_at=_utc(message.timestamp or time.time()),
        )
        self.sink.produce(self.dlq_topic, encode(letter), key=message.key)
        self.metrics.dead_letters.labels(reason, logical_topic).inc()
        self.audit(
            message.partition,
            "dead_letter",
            event_id=f"dlq:{message.topic}:{message.partition}:{message.offset}",
            at=letter.received_at,
            actor="escalation-gate",
            data={
                "reason": reason,
                "error": letter.error,
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
            fields={"reason": reason},
        )

    def decode_or_dlq(self, event: Any, model: type[BaseModel], logical_topic: str) -> Any:
        """The decoded message, or ``None`` after dead-lettering it."""
        value = event.message.value
        self.metrics.inc(self.metrics.messages, logical_topic)
        try:
            return decode(model, value or b"", max_bytes=self.settings.max_message_bytes)
        except InputError as exc:
            self.dead_letter(event, exc, logical_topic)
            return None

    def send_state(
        self, table: str, key: str, update: dict[str, Any], *, source: Any = None
    ) -> dict[str, Any]:
        """Append a state update to the ``state`` log, keyed by its table key.

        ``source`` (the input event) gives the update a deterministic id, so an input
        redelivered after a crash folds once.
        """
        full = {"table": table, "key": key, **update}
        if source is not None and "id" not in full:
            m = source.message
            full["id"] = f"{m.topic}:{m.partition}:{m.offset}:{table}"
        self.sink.produce(self.state_topic, canonical_json(full), key=f"{table}|{key}".encode())
        return full

    # ------------------------------------------------------------------ agents

    async def _consume(
        self, stream: Any, logical_topic: str, handle: Callable[[Any], None]
    ) -> None:
        """Handle every event of ``stream`` this worker owns, and acknowledge it only
        once everything it caused is on the broker (at-least-once).

        Events are handled as they arrive; acknowledgements trail behind, one delivery
        barrier (``Sink.delivered``) at a time, in a task of their own: the agent never
        waits for the broker, and Faust commits only offsets whose outputs are written.
        An exception in ``handle`` dead-letters the event (a bug must not lose it); a
        record that cannot be written stops the worker before anything is acknowledged.
        """
        stream = stream.noack()
        handled: list[Any] = []
        wake = asyncio.Event()

        async def acknowledge() -> None:
            while True:
                await wake.wait()
                wake.clear()
                events = handled[:]
                handled.clear()
                await self.sink.delivered()
                for event in events:
                    await stream.ack(event)

        acker = asyncio.create_task(acknowledge(), name=f"ack-{logical_topic}")
        try:
            async for event in stream.events():
                # Events of a partition revoked meanwhile are acknowledged unhandled:
                # a commit for a partition the worker lost is discarded by Faust.
                if not self._resynced.is_set():
                    await self._resynced.wait()
                if event.message.tp in self._assigned:
                    try:
                        handle(event)
                    except DeliveryError as exc:
                        self._fatal(exc)
                    except Exception as exc:
                        log.exception(
                            "%s: message at offset %d failed", logical_topic, event.message.offset
                        )
                        self.dead_letter(event, exc, logical_topic)
                handled.append(event)
                wake.set()
        finally:
            acker.cancel()

    async def _proposals(self, stream: Any) -> None:
        await self.mirror.ready.wait()
        await self._consume(stream, "proposals", self.on_proposal)

    def on_proposal(self, event: Any) -> None:
        proposal = self.decode_or_dlq(event, Proposal, "proposals")
        if proposal is not None:
            self.decide(event, proposal)

    def decide(self, event: Any, proposal: Proposal) -> Decision:
        """Enrich, evaluate, route, audit: one proposal."""
        message = event.message
        now = _utc(message.timestamp)
        policy = self.policy
        service = proposal.action.target.service
        decision_id = decision_id_for(proposal)
        mirror = self.mirror
        hkey = reducers.history_key(proposal.pattern, proposal.action.type)
        context = reducers.build_context(
            now=now,
            decision_id=decision_id,
            history=mirror.get("history", hkey),
            budget=mirror.get("budgets", service),
            verdicts=mirror.get("verdicts", proposal.source.ai_system),
            requalification=mirror.get("requalification", hkey),
            velocity_service=mirror.get("velocity", service),
            velocity_fleet=mirror.values("velocity"),
            freeze={"*": mirror.get("freeze", "*"), service: mirror.get("freeze", service)},
            velocity_window_seconds=policy.velocity.window_seconds,
            offset=message.offset,
        )
        decision = evaluate(proposal, context, policy)
        self._check_review_date(policy, now)
        # Serialised once: the decision topic, the audit event and the lifecycle share it.
        decision_json = dump_decision(decision)
        fields = {
            "level": str(decision.level),
            "route": decision.route,
            "service": service,
            "ai_system": proposal.source.ai_system,
            "pattern": proposal.pattern,
            "action_type": proposal.action.type,
        }
        self.audit(
            message.partition,
            "proposal_received",
            event_id=f"{decision_id}:received",
            at=now,
            actor=proposal.source.ai_system,
            proposal_id=proposal.proposal_id,
            decision_id=decision_id,
            data={"proposal": decision_json["proposal"]},
            fields={k: fields[k] for k in ("service", "ai_system", "pattern", "action_type")},
        )
        body = orjson.dumps(decision_json)
        self.sink.produce(self.routes[decision.route], body, key=service.encode())
        audit_data: dict[str, Any] = {"decision": decision_json}
        if decision.level in (2, 3):
            # Only the pending entry travels (about 0.5 KB instead of the 5 KB decision).
            entry = lifecycle.open_entry(decision_json, policy)
            self.sink.produce(
                self.lifecycle_topic,
                orjson.dumps({"type": "open", "entry": entry}),
                key=decision_id.encode(),
            )
            if decision.level == 2:
                # The approval request is part of the decision's event: who is asked,
                # until when, and whether a change record is required.
                audit_data["approval"] = {
                    "asked": entry["asked"],
                    "timeout_at": decision_json["approval_timeout_at"],
                    "change_record_required": entry["change_record_required"],
                }
        if decision.level >= 3:
            # Applied here at once (the velocity guard must see a burst as it happens)
            # and again from the log, where the decision id makes it a no-op.
            mirror.apply(
                self.send_state(
                    "velocity",
                    service,
                    {
                        "op": "autonomous",
                        "id": decision_id,
                        "decision_id": decision_id,
                        "at": now.timestamp(),
                        "offset": message.offset,
                        "window_seconds": policy.velocity.window_seconds,
                    },
                )
            )
        self.audit(
            message.partition,
            "decision",
            event_id=f"{decision_id}:decision",
            at=now,
            actor="escalation-gate",
            proposal_id=proposal.proposal_id,
            decision_id=decision_id,
            data=audit_data,
            fields=fields,
        )
        self.metrics.inc(self.metrics.decisions, str(decision.level), decision.route)
        for trigger in decision.triggers:
            self.metrics.inc(self.metrics.triggers, trigger)
        self.metrics.latency.observe(max(0.0, time.time() - message.timestamp))
        return decision

    async def _outcomes(self, stream: Any) -> None:
        await self._consume(stream, "outcomes", self.on_outcome)

    def on_outcome(self, event: Any) -> None:
        """Fold an executor's report into history, AI verdicts and re-qualification."""
        outcome = self.decode_or_dlq(event, Outcome, "outcomes")
        if outcome is None:
            return
        hkey = reducers.history_key(outcome.pattern, outcome.action_type)
        self.send_state(
            "history", hkey, {"op": "outcome", "success": outcome.successful}, source=event
        )
        self.send_state(
            "verdicts",
            outcome.ai_system,
            {"op": "verdict", "false_positive": outcome.not_needed, "at": outcome.at.timestamp()},
            source=event,
        )
        autonomous = outcome.level >= 3
        if outcome.verification == "failed":
            self.page_oncall(
                event.message.partition,
                reason="verification_failed",
                escalation_id=f"{outcome.decision_id}:verification",
                decision_id=outcome.decision_id,
                proposal_id=outcome.proposal_id,
                service=outcome.service,
                pattern=outcome.pattern,
                action_type=outcome.action_type,
                summary=f"verification failed after {outcome.action_type} on {outcome.service}",
                asked=(),
                number=1,
                at=outcome.at,
            )
        if autonomous and not outcome.successful:
            self.send_state(
                "requalification",
                hkey,
                {
                    "op": "revoke",
                    "user": "escalation-gate",
                    "at": outcome.at.timestamp(),
                    "reason": f"suboptimal outcome of {outcome.decision_id}",
                },
            )
        self.audit(
            event.message.partition,
            "outcome",
            event_id=f"{outcome.decision_id}:outcome:{event.message.offset}",
            at=outcome.at,
            actor=f"executor:{outcome.service}",
            proposal_id=outcome.proposal_id,
            decision_id=outcome.decision_id,
            data={"outcome": outcome.model_dump(mode="json")},
            fields={
                "level": str(outcome.level),
                "service": outcome.service,
                "ai_system": outcome.ai_system,
                "pattern": outcome.pattern,
                "result": outcome.result,
                "verification": outcome.verification,
            },
        )

    async def _budgets(self, stream: Any) -> None:
        await self._consume(stream, "error-budgets", self.on_budget)

    def on_budget(self, event: Any) -> None:
        update = self.decode_or_dlq(event, ErrorBudgetUpdate, "error-budgets")
        if update is not None:
            self.send_state(
                "budgets",
                update.service,
                {"op": "budget", "remaining": update.remaining, "at": update.at.timestamp()},
            )

    async def _control(self, stream: Any) -> None:
        await self._consume(stream, "control", self.on_control)

    def on_control(self, event: Any) -> None:
        """Freeze, unfreeze, re-qualify, revoke, or reload the policy."""
        command = self.decode_or_dlq(event, ControlCommand, "control")
        if command is None:
            return
        at = command.at.timestamp()
        kind: AuditKind = "freeze" if command.command == "freeze" else "unfreeze"
        data: dict[str, Any] = {"command": command.model_dump(mode="json", exclude={"policy_yaml"})}
        if command.command in {"freeze", "unfreeze"}:
            self.send_state(
                "freeze",
                command.service or "*",
                {"op": command.command, "user": command.user, "at": at},
            )
        elif command.command in {"requalify", "revoke"}:
            assert command.pattern is not None  # noqa: S101 - the model guarantees it
            assert command.action_type is not None  # noqa: S101
            self.send_state(
                "requalification",
                reducers.history_key(command.pattern, command.action_type),
                {"op": command.command, "user": command.user, "at": at, "reason": command.reason},
            )
            kind = (
                "requalification" if command.command == "requalify" else "requalification_revoked"
            )
        else:
            text = command.policy_yaml or ""
            try:
                policy = parse_policy(text, source=f"control:{command.user}")
            except Exception as exc:  # any failure to parse is a rejection, never a crash
                kind = "policy_rejected"
                data["problems"] = (
                    exc.problems if isinstance(exc, PolicyError) else [f"{type(exc).__name__}"]
                )
                self.metrics.policy_rejected.inc()
            else:
                kind = "policy_load"
                data.update(version=policy.version, digest=policy.digest)
                self.send_state(
                    "policy",
                    "current",
                    {"op": "policy", "yaml": text, "digest": policy.digest, "by": command.user},
                )
        self.audit(
            event.message.partition,
            kind,
            event_id=f"control:{event.message.partition}:{event.message.offset}",
            at=command.at,
            actor=command.user,
            data=data,
            fields={"service": command.service or "*", "command": command.command},
        )

    # ------------------------------------------------------------------ lifecycle

    def page_oncall(
        self,
        partition: int,
        *,
        reason: Literal["approval_timeout", "verification_failed"],
        escalation_id: str,
        decision_id: str,
        proposal_id: str,
        service: str,
        pattern: str,
        action_type: str,
        summary: str,
        asked: tuple[str, ...],
        number: int,
        at: dt.datetime,
    ) -> None:
        """Send an escalation to ``oncall`` and audit it."""
        page = OncallEscalation.model_construct(
            schema_version=1,
            escalation_id=escalation_id,
            decision_id=decision_id,
            proposal_id=proposal_id,
            reason=reason,
            escalation_number=number,
            asked=asked,
            service=service,
            pattern=pattern,
            action_type=action_type,
            summary=summary[:4096],
            at=at,
        )
        self.sink.produce(self.oncall_topic, encode(page), key=service.encode())
        self.metrics.oncall.labels(reason).inc()
        self.audit(
            partition,
            "timeout_escalation" if reason == "approval_timeout" else "verification_failed",
            event_id=escalation_id,
            at=at,
            actor="escalation-gate",
            proposal_id=proposal_id,
            decision_id=decision_id,
            data={"escalation": page.model_dump(mode="json")},
            fields={"service": service, "pattern": pattern, "reason": reason},
        )

    async def _lifecycle(self, stream: Any) -> None:
        await self._consume(stream, "lifecycle", self.on_lifecycle_or_answer)

    def on_lifecycle_or_answer(self, event: Any) -> None:
        if event.message.topic != self.lifecycle_topic:
            answer = self.decode_or_dlq(event, ApprovalResponse, "approvals")
            if answer is not None:
                self.on_answer(event, answer)
        else:
            self.on_lifecycle(event)

    def on_lifecycle(self, event: Any) -> None:
        """A lifecycle record: ``open`` (a new L2/L3 decision) or ``entry`` (an update,
        usually this worker's own, read back). Folded into the pending entries."""
        entry = lifecycle.fold(self.pending, parse_json(event.message.value))
        if entry is not None:  # None: a redelivery, an update already applied, an old tick
            self._store_entry(event.message.partition, entry)

    def _evict(self, now: float) -> None:
        """Forget entries older than the lifecycle log keeps them (a worker that stays
        assigned for weeks must not hold every decision it ever saw)."""
        horizon = now - LIFECYCLE_RETENTION_MS / 1000
        for decision_id, entry in list(self.pending.items()):
            if float(entry.get("opened_at", now)) < horizon and not lifecycle.is_open_approval(
                entry
            ):
                del self.pending[decision_id]
                self._pending_partition.pop(decision_id, None)

    def _store_entry(self, partition: int, entry: lifecycle.Entry) -> None:
        """Hold ``entry`` as the pending entry of its decision, on ``partition``."""
        decision_id = entry["decision_id"]
        self.pending[decision_id] = entry
        self._pending_partition[decision_id] = partition
        self._track_deadline(entry)

    def _update_entry(
        self, partition: int, old: lifecycle.Entry | None, new: lifecycle.Entry
    ) -> None:
        """Hold the successor of ``old`` and append it to the lifecycle log."""
        entry = lifecycle.next_version(old, new)
        self._store_entry(partition, entry)
        self.sink.produce(
            self.lifecycle_topic,
            orjson.dumps({"type": "entry", "entry": entry}),
            key=entry["decision_id"].encode(),
            partition=partition,
        )

    def escalate(self, decision_id: str, at: dt.datetime) -> bool:
        """Page on-call for an approval whose timeout passed (the timer); False if none is due."""
        pending = self.pending.get(decision_id)
        partition = self._pending_partition.get(decision_id)
        escalated = lifecycle.due_escalation(pending, at)
        if escalated is None or pending is None or partition is None:
            return False
        self._update_entry(partition, pending, escalated)
        self.page_oncall(
            partition,
            reason="approval_timeout",
            escalation_id=f"{decision_id}:timeout:{escalated['escalations']}",
            decision_id=decision_id,
            proposal_id=pending["proposal_id"],
            service=pending["service"],
            pattern=pending["pattern"],
            action_type=pending["action_type"],
            summary=f"no answer to approval of {pending['action_type']} on {pending['service']}"
            f" ({pending['summary']})",
            asked=tuple(pending.get("asked", ())),
            number=int(escalated["escalations"]),
            at=at,
        )
        return True

    def on_answer(self, event: Any, answer: ApprovalResponse) -> None:
        """A human's approve / reject / abort: judge it, store, send, audit."""
        now = _utc(event.message.timestamp)
        entry = self.pending.get(answer.decision_id)
        verdict = lifecycle.judge_answer(
            entry,
            answer,
            policy=self.policy,
            now=now,
            signature_valid=signature_ok(answer, self.settings.approval_secret.get_secret_value()),
        )
        partition = event.message.partition
        if verdict.entry is not None:
            self._update_entry(partition, entry, verdict.entry)
        base = {
            "kind": answer.kind,
            "user": answer.user,
            "channel": answer.channel,
            "change_record": answer.change_record,
            "nonce": answer.nonce,
        }
        if not verdict.accepted:
            self.metrics.answers_refused.labels(verdict.reason).inc()
            self.audit(
                partition,
                "answer_refused",
                event_id=f"{answer.decision_id}:refused:{answer.nonce}:{event.message.offset}",
                at=now,
                actor=answer.user,
                decision_id=answer.decision_id,
                proposal_id=entry["proposal_id"] if entry else None,
                data={**base, "reason": verdict.reason},
                fields={"reason": verdict.reason, "kind": answer.kind},
            )
            return
        assert verdict.entry is not None  # noqa: S101 - accepted answers carry the entry
        new = verdict.entry
        self.metrics.answers_accepted.labels(answer.kind).inc()
        kinds: dict[str, AuditKind] = {
            "approve": "approval_accepted",
            "reject": "rejection",
            "abort": "abort",
        }
        kind = kinds[answer.kind]
        self.audit(
            partition,
            kind,
            event_id=f"{answer.decision_id}:{answer.kind}",
            at=now,
            actor=answer.user,
            decision_id=answer.decision_id,
            proposal_id=new["proposal_id"],
            data={**base, "false_positive": answer.false_positive, "reason": answer.reason},
            fields={"service": new["service"], "pattern": new["pattern"], "kind": answer.kind},
        )
        if verdict.false_positive:
            self.send_state(
                "verdicts",
                new["ai_system"],
                {"op": "verdict", "false_positive": True, "at": now.timestamp()},
            )
        for command in verdict.commands:
            self.send_command(partition, command, new, answer, now)

    def send_command(
        self, partition: int, command: str, entry: dict[str, Any], answer: Any, now: dt.datetime
    ) -> None:
        """An execute (after approval) or abort command on ``decisions.execute``."""
        body = ExecuteCommand(
            type=command,
            command_id=f"{entry['decision_id']}:{command}",
            decision_id=entry["decision_id"],
            proposal_id=entry["proposal_id"],
            level=entry["level"],
            by=answer.user,
            change_record=answer.change_record,
            issued_at=now,
            service=entry["service"],
            pattern=entry["pattern"],
            action_type=entry["action_type"],
        )
        self.sink.produce(self.routes["execute"], encode(body), key=entry["service"].encode())
        self.audit(
            partition,
            "execute_command",
            event_id=f"{entry['decision_id']}:{command}_command",
            at=now,
            actor=answer.user,
            decision_id=entry["decision_id"],
            proposal_id=entry["proposal_id"],
            data={"command": command, "by": answer.user, "change_record": answer.change_record},
            fields={"service": entry["service"], "command": command},
        )

    def _track_deadline(self, entry: dict[str, Any]) -> None:
        """Keep the timer's index of open approvals in step with a pending entry."""
        if lifecycle.is_open_approval(entry):
            deadline = float(entry["timeout_at"])
            if self._deadlines.get(entry["decision_id"]) != deadline:
                self._deadlines[entry["decision_id"]] = deadline
                heapq.heappush(self._due, (deadline, entry["decision_id"]))
        else:
            self._deadlines.pop(entry["decision_id"], None)

    async def _watchdog(self) -> None:
        """Stop the worker when an input partition it is assigned has input waiting and
        its committed offset has not moved for ``stall_seconds``.

        A backstop: Faust once left partitions unserved after a rebalance until the
        next one (the cause is fixed in streams/topology/transport.py); nothing was
        lost, but nothing was decided either. The exit is logged at CRITICAL with the
        partition's Faust and aiokafka state; a supervisor restarts the worker, and
        the group gives the partition to a worker that serves it.
        """
        if not self._resynced.is_set() or not self.mirror.ready.is_set():
            return  # a worker still catching up on state is slow, not stalled
        tps = {(tp.topic, tp.partition) for tp in self._assigned if tp.topic in self._inputs}
        try:
            offsets = await asyncio.get_running_loop().run_in_executor(
                None, progress, self.bootstrap, self.app.conf.id, tps
            )
        except Exception as exc:
            log.warning("stall watchdog could not read offsets: %s", exc)
            return
        if not self._resynced.is_set():
            return  # a rebalance began meanwhile: its assignment starts a new watch
        owned = {(tp.topic, tp.partition) for tp in self._assigned}
        offsets = {tp: value for tp, value in offsets.items() if tp in owned}
        now = time.monotonic()
        for topic, partition in stalled(
            self._progress, offsets, now=now, after=self.settings.stall_seconds
        ):
            committed, end = offsets[(topic, partition)]
            log.critical("stalled: %s", partition_state(self.app, topic, partition))
            self._fatal(
                RuntimeError(
                    f"{topic}[{partition}] is assigned here and has input up to offset {end}, "
                    f"but its committed offset stayed at {committed} for "
                    f"{self.settings.stall_seconds:.0f}s or more (stalled consumer)"
                )
            )

    async def _tick(self) -> None:
        """Escalate every approval whose timeout passed (soonest deadline first).

        Runs on the event loop between agent events, so it reads and writes the
        pending entries as an agent would; it waits for the re-sync of a new
        assignment, and its updates go to the lifecycle log like an answer's.
        """
        if not self._resynced.is_set():
            return
        now = time.time()
        at = _utc(now)
        if now - self._evicted_at >= 60.0:
            self._evicted_at = now
            self._evict(now)
        while self._due and self._due[0][0] <= now:
            _, decision_id = heapq.heappop(self._due)
            deadline = self._deadlines.get(decision_id)
            if deadline is None or deadline > now:
                continue  # closed, or its deadline moved on (pushed again then)
            if not self.escalate(decision_id, at):
                self._deadlines.pop(decision_id, None)

    # ------------------------------------------------------------------ seeding

    @staticmethod
    def history_updates(record: HistoryRecord) -> list[tuple[str, str, dict[str, Any]]]:
        """State updates that seed one past incident (``escalation history import``)."""
        at = record.at.timestamp()
        digest = hashlib.sha256(canonical_json(record.model_dump(mode="json"))).hexdigest()[:24]
        return [
            (
                "history",
                reducers.history_key(record.pattern, record.action_type),
                {
                    "op": "outcome",
                    "success": record.outcome == "success",
                    "at": at,
                    "id": f"import:{digest}",
                },
            ),
            (
                "verdicts",
                record.ai_system,
                {
                    "op": "verdict",
                    "false_positive": record.verdict != "true_positive",
                    "at": at,
                    "id": f"import:{digest}",
                },
            ),
        ]
