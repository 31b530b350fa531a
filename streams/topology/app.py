"""The Faust app: the wiring of topics, agents and the timer around the pure handlers.

Data flow (every arrow is a Kafka topic; every output goes through one
confluent-kafka producer, ``streams/kafka/sink.py``)::

    proposals ──► [proposals agent] ──► decisions.{execute,approve,assist,manual}
                        │   ▲                 └► lifecycle (L2/L3, keyed by decision id)
                        │   └── state mirror (every worker folds all of ``state``)
    outcomes, error-budgets, control ──► [input agents] ──► state (keyed by table key)
    lifecycle, approvals ──► [lifecycle agent] ──► pending entries in memory,
                        updates back to lifecycle; execute / abort commands; oncall
    every agent, the approval timer ──► audit (a hash chain per input topic-partition,
                        signed checkpoints every few seconds), dlq

Each agent decodes (``decode``), calls its handler in ``streams.handlers`` with the
state it needs and the instant, and emits the returned effects (``emitter.py``).
Around them: audit sealing (``sealer.py``), pending approvals (``approvals.py``),
assignment and re-sync (``assignment.py``), the stall watchdog (``watchdog.py``) and
acknowledgement after delivery (``acks.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import time
from typing import Any, TypeVar

from aiokafka.partitioner import murmur2
from pydantic import BaseModel

from streams import handlers, keys
from streams.audit.chain import ChainHead
from streams.errors import InputError, KeyFileError
from streams.handlers import Effects, Origin
from streams.kafka.security import aiokafka_config, confluent_config
from streams.kafka.sink import Sink
from streams.metrics import Metrics
from streams.models import (
    ApprovalResponse,
    ControlCommand,
    Decision,
    ErrorBudgetUpdate,
    Outcome,
    Proposal,
    decode,
)
from streams.models.codec import decode_with_body, parse_json
from streams.policy import Policy, parse_policy
from streams.policy.keyring import Keyring
from streams.settings import Settings
from streams.state import reducers
from streams.state.records import PendingEntry
from streams.state.trust import calibration_errors
from streams.topology.acks import consume
from streams.topology.approvals import Approvals
from streams.topology.assignment import Assignment
from streams.topology.checkpoints import Checkpoints
from streams.topology.config import app_id, faust_args
from streams.topology.emitter import Emitter
from streams.topology.lanes import LaneReader, offsets_group
from streams.topology.mirror import Mirror
from streams.topology.sealer import Sealer
from streams.topology.snapshot import Snapshots
from streams.topology.transport import App
from streams.topology.watchdog import Watchdog

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def _gate_keys(settings: Settings) -> keys.PublicKeys | None:
    """The gate's public keys, so the re-sync ignores a forged checkpoint."""
    try:
        return keys.gate_public_keys(settings)
    except Exception:  # a verifier that cannot be built leaves the re-sync as before
        log.exception("the gate's public keys cannot be read: checkpoints are not verified")
        return None


def _decision_signer(settings: Settings) -> keys.Signer | None:
    """The gate's key, which signs every decision and page (streams/topology/emitter.py).

    Without one the gate still decides, unsigned: executors refuse unsigned records,
    so nothing executes (toward humans), and this says why, loudly.
    """
    try:
        return keys.gate_signer(settings)
    except KeyFileError as exc:
        log.error("decisions are NOT signed, executors will refuse them: %s", exc)  # noqa: TRY400
        return None


@functools.lru_cache(maxsize=65_536)
def home_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka's) gives ``key``.

    Cached: aiokafka's murmur2 is pure Python (3% of a decision's CPU, profiled), and
    a fleet has far fewer services than proposals."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def origin_of(event: Any) -> Origin:
    """Where a Faust event's record came from."""
    m = event.message
    value = m.value if isinstance(m.value, bytes) else b""
    return Origin(m.topic, m.partition, m.offset, m.timestamp or time.time(), m.key, value)


class Gate:
    """One worker's Faust app and the objects its agents share."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        metrics: Metrics,
        *,
        bootstrap: str,
        keyring: Keyring,
    ) -> None:
        self.settings = settings
        # Who may sign what (streams/policy/keyring.py); its digest is in every decision.
        self.keyring = keyring
        self.gate_keys = _gate_keys(settings)
        # The proposals topic's real partition count (placement of misplaced proposals).
        self.proposal_partitions = settings.partitions
        policy.bind_keyring(keyring.digest)
        self.policy = policy
        self.metrics = metrics
        self.bootstrap = bootstrap
        (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        self.app = App(app_id(settings), **faust_args(settings, bootstrap))
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
        self.lifecycle_topic = topic("lifecycle")
        # Kafka security settings of every client (streams/kafka/security.py).
        self.sink = Sink(bootstrap, linger_ms=settings.linger_ms, **confluent_config(settings))
        self.sink.on_fatal = self._fatal
        # Keys and values are JSON in the changelogs (faust picks "json" for str keys).
        checkpoints = self.app.Table("audit-heads", key_type=str, partitions=settings.partitions)
        self.sealer = Sealer(settings, checkpoints)
        self.approvals = Approvals()
        self.mirror = Mirror(bootstrap, topic("state"), client=aiokafka_config(settings))
        self.mirror.on_applied = lambda table: self.metrics.state_applied.labels(table).inc()
        self.mirror.listeners.append(self._on_state)
        # Each state partition's owner writes its folded values to state.folded, so a
        # restart reads the live keys, not the whole history (streams/topology/snapshot.py).
        folded = topic("state.folded")
        self.snapshots = Snapshots(
            self.mirror,
            lambda key, value, p: self.sink.produce(folded, value, key=key, partition=p),  # type: ignore[arg-type] # None: a tombstone
            owned=self._owned_state,
            batch=self.sink.held,
        )
        self.emitter = Emitter(
            settings,
            sink=self.sink,
            sealer=self.sealer,
            approvals=self.approvals,
            metrics=metrics,
            apply_state=self.mirror.apply,
            signer=_decision_signer(settings),
        )
        # Signed checkpoints of the chains this worker holds (streams/audit/checkpoint.py):
        # every audit_checkpoint_seconds, and a final one when partitions are revoked
        # (before the flush) and when the worker stops.
        self.checkpoints = Checkpoints(
            settings, sealer=self.sealer, sink=self.sink, metrics=metrics
        )
        self.sources = {
            topic(name): name
            for name in ("proposals", "outcomes", "error-budgets", "control", "lifecycle",
                         "approvals")
        }  # fmt: skip
        self.assignment = Assignment(
            bootstrap=bootstrap,
            group=self.app.conf.id,
            sources=self.sources,
            lifecycle_topic=self.lifecycle_topic,
            audit_topic=topic("audit"),
            on_ready=self._on_ready,
            flush=self.checkpoints.give_up,
            fatal=self._fatal,
            gate_keys=_gate_keys(settings) if self.checkpoints.checkpointer else None,
            client=confluent_config(settings),
        )
        # Proposals, lifecycle and approvals are read by librdkafka into lanes
        # (streams/topology/lanes.py), on the partition numbers Faust assigns this worker
        # of outcomes; or, with ESCALATION_PROPOSALS_READER=faust, by Faust agents.
        self.reader = self._lane_reader(settings, bootstrap)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type] # faust stub
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type] # faust stub
        sources = (
            self.t_proposals,
            self.t_outcomes,
            self.t_budgets,
            self.t_control,
            self.t_answers,
        )
        self.watchdog = Watchdog(
            self.app,
            self.assignment,
            inputs=frozenset(name for source in sources for name in source.topics),
            bootstrap=bootstrap,
            stall_seconds=settings.stall_seconds,
            fatal=self._fatal,
            busy=lambda: not self.mirror.ready.is_set(),
            groups=dict.fromkeys(self.reader.handlers, offsets_group(self.app.conf.id))
            if self.reader
            else None,
        )
        self._overdue_logged = -1e9
        self._evicted_at = time.time()

        self._wire(settings)
        self._policy_gauges()

    def _wire(self, settings: Settings) -> None:
        """The agents, timers and tasks of the Faust app."""
        if self.reader is None:
            self.app.agent(self.t_proposals, name="proposals")(self._proposals)
        else:
            self.app.task(self._read_proposals)
        self._agent(self.t_outcomes, "outcomes", self.on_outcome)
        self._agent(self.t_budgets, "error-budgets", self.on_budget)
        self._agent(self.t_control, "control", self.on_control)
        if self.reader is None:
            self._agent(self.t_answers, "lifecycle", self.on_lifecycle_or_answer)
        self.app.timer(settings.tick_seconds)(self._tick)
        self.app.timer(settings.state_snapshot_seconds)(self.snapshots.tick)
        self.app.timer(settings.audit_checkpoint_seconds)(self._checkpoint)
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type] # faust stub
        self.app.timer(min(30.0, settings.stall_seconds / 3))(self.watchdog.check)
        self.app.task(self._start_mirror)

    # ------------------------------------------------------------------ plumbing

    def _fatal(self, error: Exception) -> None:
        """A record could not be written (or a consumer stalled): exit before anything
        more is acknowledged, so that it is processed again after the restart."""
        log.critical("%s; exiting so that the unacknowledged input is redelivered", error)
        logging.shutdown()
        os._exit(70)  # EX_SOFTWARE: no finalisers, no offset commit on the way out

    def _on_ready(
        self,
        chains: set[str],
        heads: dict[str, ChainHead],
        pending: dict[int, dict[str, PendingEntry]],
    ) -> None:
        self.watchdog.reset()
        self.approvals.adopt(pending)
        self.sealer.adopt(chains, heads)
        # The heads this worker now holds, signed at once: the next re-sync of these
        # partitions stops here instead of reading back to each chain's last event.
        self.checkpoints.write()

    async def _checkpoint(self) -> None:
        if self.assignment.ready.is_set():
            self.checkpoints.write()

    async def _on_shutdown(self, _sender: Any, **_kw: Any) -> None:
        """The worker stops (its agents no longer run): a final checkpoint, flushed;
        the proposals decided so far committed."""
        if self.assignment.ready.is_set():
            self.assignment.ready.clear()
            left = await self.checkpoints.give_up()
            if left:
                log.warning("%d records still queued when the worker stopped", left)
            if self.reader is not None:
                await self.reader.revoke()
        if self.reader is not None:
            await self.reader.close()

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any, **kw: Any) -> None:
        await self.assignment.on_revoked(sender, *args, signal=signal, **kw)
        if self.reader is not None:
            await self.reader.revoke()

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any, **kw: Any) -> None:
        await self.assignment.on_assigned(sender, *args, signal=signal, **kw)
        if self.reader is not None:
            source = self.assignment.mirror_from
            try:
                await self.reader.assign(
                    tp.partition for tp in self.assignment.assigned if tp.topic == source
                )
            except Exception as exc:  # reading nothing would decide nothing: restart
                self._fatal(RuntimeError(f"cannot assign the proposals partitions: {exc}"))

    def _lane_reader(self, settings: Settings, bootstrap: str) -> LaneReader | None:
        """The lanes' reader of the proposals, lifecycle and approvals topics, unless a
        Faust agent reads them (``ESCALATION_PROPOSALS_READER=faust``)."""
        if settings.proposals_reader != "lanes":
            return None
        handlers = {
            self.t_proposals.get_topic_name(): self.on_proposal,
            **dict.fromkeys(self.t_answers.topics, self.on_lifecycle_or_answer),
        }
        self.assignment.mirrored = frozenset(handlers)
        self.assignment.mirror_from = self.t_outcomes.get_topic_name()
        self.assignment.pending_group = offsets_group(self.app.conf.id)
        return LaneReader(
            config={"bootstrap.servers": bootstrap, **confluent_config(settings)},
            handlers=handlers,
            by_key=frozenset({self.t_proposals.get_topic_name()}),
            group=self.app.conf.id,
            on_error=lambda event, exc: self.dead_letter(event, exc, self.sources[event.topic]),
            assignment=self.assignment,
            sink=self.sink,
            fatal=self._fatal,
            on_waiting=self.metrics.proposals_waiting.set,
        )

    async def _read_proposals(self) -> None:
        """The lanes' decider (streams/topology/lanes.py), once the state is in place."""
        await self.mirror.ready.wait()
        if self.reader is not None:
            await self.reader.run()

    def _agent(self, source: Any, name: str, handle: Any) -> None:
        async def agent(stream: Any) -> None:
            await self._consume(stream, name, handle)

        self.app.agent(source, name=name)(agent)

    async def _consume(self, stream: Any, name: str, handle: Any) -> None:
        await consume(
            stream,
            name=name,
            handle=handle,
            on_error=lambda event, exc: self.dead_letter(event, exc, name),
            assignment=self.assignment,
            sink=self.sink,
            fatal=self._fatal,
        )

    async def _start_mirror(self) -> None:
        await self.mirror.start()

    def _owned_state(self) -> set[int]:
        """The state partitions this worker folds for everyone: its proposals partitions."""
        if not self.assignment.ready.is_set():
            return set()
        proposals = self.t_proposals.get_topic_name()
        return {tp.partition for tp in self.assignment.assigned if tp.topic == proposals}

    def _policy_gauges(self) -> None:
        self.metrics.policy_info.clear()
        self.metrics.policy_info.labels(self.policy.version, self.policy.digest).set(1)

    def _on_state(self, table: str, key: str, value: Any) -> None:
        """Keep metrics and the policy in force in step with the mirrored state."""
        if table == "verdicts":
            rate = reducers.ai_fp_rate(value, dt.datetime.now(tz=dt.UTC))
            self.metrics.ai_fp_rate.labels(key).set(rate if rate is not None else 0.0)
        elif table == "calibration":
            for ai_system, model, ece, brier in calibration_errors({key: value}, self.policy):
                self.metrics.calibration_error.labels(ai_system, model, "ece").set(ece)
                self.metrics.calibration_error.labels(ai_system, model, "brier").set(brier)
        elif table == "policy" and key == "current" and value:
            self.adopt_policy(value)

    def adopt_policy(self, value: dict[str, Any]) -> None:
        """Put the policy stored in ``state`` in force (validated before it was stored)."""
        text = value.get("yaml")
        if not isinstance(text, str) or value.get("digest") == self.policy.digest:
            return
        try:
            policy = parse_policy(text, source=f"control:{value.get('by', '?')}")
        except Exception:
            # Validated before it was stored; a bad value here keeps the old policy.
            log.exception("stored policy does not validate; keeping v%s", self.policy.version)
            return
        if policy.keyring_sha256 not in (None, self.keyring.digest):
            log.error("stored policy v%s pins another keyring; keeping v%s", policy.version,
                      self.policy.version)  # fmt: skip
            return
        policy.bind_keyring(self.keyring.digest)
        self.policy = policy
        self._policy_gauges()
        log.info("policy v%s (%s) in force", policy.version, policy.digest[:12])

    def _review_overdue(self, overdue: bool) -> None:
        """A policy past its review date caps autonomy at 2: say so, loudly, until reviewed."""
        self.metrics.policy_overdue.set(1 if overdue else 0)
        if overdue and time.monotonic() - self._overdue_logged > 60.0:
            self._overdue_logged = time.monotonic()
            policy = self.policy
            log.warning(
                "policy %s v%s was due for review on %s: every decision is capped at Level 2 "
                "until a reviewed policy is loaded (escalation policy load)",
                policy.policy.name,
                policy.version,
                policy.policy.next_review,
            )

    def emit(self, event: Any, effects: Effects) -> None:
        """Emit the effects of one input event (sealed on its topic-partition's chain)."""
        m = event.message
        self.emitter.emit(effects, m.partition, source=self.sources[m.topic])

    def decode(self, event: Any, model: type[M], logical_topic: str) -> M | None:
        """The decoded message, or ``None`` after dead-lettering it."""
        self.metrics.inc(self.metrics.messages, logical_topic)
        try:
            return decode(
                model, event.message.value or b"", max_bytes=self.settings.max_message_bytes
            )
        except InputError as exc:
            self.dead_letter(event, exc, logical_topic)
            return None

    def decode_signed(
        self, event: Any, model: type[M], logical_topic: str
    ) -> tuple[M, dict[str, Any]] | None:
        """The decoded message and its JSON object (what its signature covers), or
        ``None`` after dead-lettering it."""
        self.metrics.inc(self.metrics.messages, logical_topic)
        try:
            return decode_with_body(
                model, event.message.value or b"", max_bytes=self.settings.max_message_bytes
            )
        except InputError as exc:
            self.dead_letter(event, exc, logical_topic)
            return None

    def dead_letter(self, event: Any, error: Exception, logical_topic: str) -> None:
        """Send the original bytes and the reason to ``dlq``; audit it; count it."""
        self.emit(event, handlers.dead_letter(origin_of(event), error, logical_topic))

    # ------------------------------------------------------------------ agents

    async def _proposals(self, stream: Any) -> None:
        await self.mirror.ready.wait()
        await self._consume(stream, "proposals", self.on_proposal)

    def on_proposal(self, event: Any) -> Decision | None:
        """Decide one proposal and emit what the decision causes."""
        proposal = self.decode(event, Proposal, "proposals")
        if proposal is None:
            return None
        origin = origin_of(event)
        home = home_partition(proposal.action.target.service.encode(), self.proposal_partitions)
        moved = handlers.misplaced(proposal, origin, home)
        if moved is not None:  # another partitioner than murmur2: decided where it belongs
            self.emit(event, moved)
            return None
        decided = handlers.decide(proposal, self.mirror, self.policy, origin)
        self._review_overdue(decided.policy_overdue)
        self.emit(event, decided.effects)
        self.metrics.latency.observe(max(0.0, time.time() - origin.timestamp))
        return decided.decision

    def on_outcome(self, event: Any) -> None:
        decoded = self.decode_signed(event, Outcome, "outcomes")
        if decoded is not None:
            outcome, body = decoded
            effects = handlers.on_signed_outcome(
                outcome, body, origin_of(event), keyring=self.keyring, oncall=self.policy.oncall
            )
            self.emit(event, effects)

    def on_budget(self, event: Any) -> None:
        decoded = self.decode_signed(event, ErrorBudgetUpdate, "error-budgets")
        if decoded is not None:
            update, body = decoded
            self.emit(
                event,
                handlers.on_signed_budget(update, body, origin_of(event), keyring=self.keyring),
            )

    def on_control(self, event: Any) -> None:
        decoded = self.decode_signed(event, ControlCommand, "control")
        if decoded is not None:
            command, body = decoded
            effects = handlers.on_control(
                command,
                body,
                origin_of(event),
                keyring=self.keyring,
                policy=self.policy,
                gate_keys=self.gate_keys,
                policy_stored=self.mirror.get("policy", "current") is not None,
            )
            self.emit(event, effects)

    def on_lifecycle_or_answer(self, event: Any) -> None:
        if event.message.topic == self.lifecycle_topic:
            # ``open`` (a new L2/L3 decision) or ``entry`` (an update, usually this
            # worker's own, read back): folded into the pending entries.
            self.approvals.fold(event.message.partition, parse_json(event.message.value))
            return
        decoded = self.decode_signed(event, ApprovalResponse, "approvals")
        if decoded is None:
            return
        answer, body = decoded
        effects = handlers.on_answer(
            answer,
            body,
            self.approvals.get(answer.decision_id),
            policy=self.policy,
            keyring=self.keyring,
            origin=origin_of(event),
        )
        self.emit(event, effects)

    async def _tick(self) -> None:
        """Escalate every approval whose timeout passed (soonest deadline first).

        Runs on the event loop between agent events, so it reads and writes the
        pending entries as an agent would; it waits for the re-sync of a new
        assignment, and its updates go to the lifecycle log like an answer's.
        """
        if not self.assignment.ready.is_set():
            return
        now = time.time()
        at = dt.datetime.fromtimestamp(now, tz=dt.UTC)
        if now - self._evicted_at >= 60.0:
            self._evicted_at = now
            self.approvals.evict(now)
        for decision_id in list(self.approvals.due(now)):
            partition = self.approvals.partition.get(decision_id)
            effects = handlers.on_timeout(self.approvals.get(decision_id), at, self.policy.oncall)
            if effects is None or partition is None:
                self.approvals.close(decision_id)
                continue
            self.emitter.emit(effects, partition, source="lifecycle")
