"""The console's read model: audit events and state updates folded into memory. PURE.

The console reads the topics the worker writes (``audit`` for everything that
happened to a decision, ``state`` for the fleet's counters) and folds them here.
Nothing in this module reads Kafka, files or the clock: the feed hands records in,
the pages pass the instant they render for. Memory is bounded: at most
``max_decisions`` decisions are kept (the oldest closed ones are forgotten first;
an approval still waiting is never forgotten while it waits), timelines, trend
buckets, answer times and chain problems each have a cap.

The gate's state is never touched from here: this is a copy, read from the log.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.audit.chain import GENESIS, body_hash
from streams.state import reducers

#: Timeline entries kept per decision (received, decided, asked, pages, answers, ...).
MAX_TIMELINE = 64
#: Minutes of trend buckets kept (six hours).
TREND_MINUTES = 360
#: Recent answer times kept for the "time to answer" chart.
MAX_ANSWER_TIMES = 2000
#: Problems remembered per audit chain.
MAX_CHAIN_PROBLEMS = 20
#: Keys of the per-pattern history and of each state table.
MAX_KEYS = 10_000
#: Fleet events (freezes, re-qualifications, policy loads) kept.
MAX_FLEET_EVENTS = 200

ANSWER_KINDS = {"approval_accepted": "approved", "rejection": "rejected", "abort": "aborted"}


def epoch(value: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 instant (or a number); ``None`` if unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if instant.tzinfo is None:
        return None
    return instant.timestamp()


@dataclass(slots=True)
class Step:
    """One line of a decision's timeline, from one audit event."""

    kind: str
    at: float
    actor: str
    text: str
    chain: str
    seq: int
    event_id: str = ""


@dataclass(slots=True)
class Item:
    """One decision as the console knows it from the audit topic."""

    decision_id: str
    proposal_id: str = ""
    level: int | None = None
    level_name: str = ""
    route: str = ""
    rule: str = ""
    service: str = ""
    pattern: str = ""
    action_type: str = ""
    ai_system: str = ""
    model: str = ""
    confidence: dict[str, Any] = field(default_factory=dict)
    triggers: tuple[str, ...] = ()
    #: The decision's conditions as JSON: one object instead of ~200 per decision, so
    #: that a view of 20,000 decisions stays cheap for the garbage collector.
    conditions_json: bytes = b"[]"
    #: Names of the conditions that hold, and how many were evaluated.
    holding: tuple[str, ...] = ()
    condition_count: int = 0
    summary: str = ""
    history: Mapping[str, Any] = field(default_factory=dict)
    decided_at: float = 0.0
    timeout_at: float | None = None
    timeout_seconds: float | None = None
    abort_ends_at: float | None = None
    change_record_required: bool = False
    asked: tuple[str, ...] = ()
    policy_version: str = ""
    #: ``open`` (an approval or an abort window), ``approved``, ``rejected``, ``aborted``,
    #: or ``decided`` for the levels that wait for nobody.
    status: str = "decided"
    escalations: int = 0
    answered_by: str = ""
    answered_at: float | None = None
    false_positive: bool = False
    executed: bool = False
    outcome: str = ""
    timeline: list[Step] = field(default_factory=list)
    chain: str = ""

    def deadline(self) -> float | None:
        """When the human must have answered: the approval's next timeout, or the end of
        the abort window."""
        if self.level == 2:
            return self.timeout_at
        if self.level == 3:
            return self.abort_ends_at
        return None

    def waiting(self, now: float) -> bool:
        """An approval still open (even after a timeout paged on-call), or an abort window
        that has not closed."""
        if self.status != "open":
            return False
        if self.level == 2:
            return True
        return self.level == 3 and self.abort_ends_at is not None and now <= self.abort_ends_at

    def conditions(self) -> list[dict[str, Any]]:
        """Every condition evaluated: rule, name, observed, operator, threshold, holds."""
        value: list[dict[str, Any]] = orjson.loads(self.conditions_json)
        return value

    def state(self) -> str:
        """What happened to it, in words (the feed's status column)."""
        if self.status == "open":
            return "waiting for approval" if self.level == 2 else "abort window open"
        if self.status in {"decided", "window closed"}:
            if self.executed:
                return "executed"
            return {0: "manual", 1: "advice only"}.get(self.level or 0, self.status)
        return self.status

    def composite_confidence(self) -> float | None:
        model, heuristic = self.confidence.get("model"), self.confidence.get("heuristic")
        if not isinstance(model, int | float):
            return None
        return float(min(model, heuristic) if isinstance(heuristic, int | float) else model)


@dataclass(slots=True)
class ChainStatus:
    """What the console read of one audit chain and whether it holds together.

    Checked as the events arrive, with the rules of ``escalation audit verify``: each
    event's hash recomputes (else ``edit``), its ``prev_hash`` is the previous event's
    hash (``broken_link``), seqs follow each other (``gap``, ``duplicate``/``reorder``),
    and the first event of a chain read from its start links to the genesis hash.
    """

    chain: str
    first_seq: int | None = None
    last_seq: int = -1
    last_hash: str = GENESIS
    events: int = 0
    problems: list[str] = field(default_factory=list)
    problem_seqs: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, seq: int, message: str) -> None:
        if len(self.problems) < MAX_CHAIN_PROBLEMS:
            self.problems.append(f"seq {seq}: {message}")
            self.problem_seqs.append(seq)

    def check(self, body: Mapping[str, Any]) -> None:
        seq = body.get("seq")
        if not isinstance(seq, int):
            return
        digest = body.get("hash")
        if body_hash(body) != digest:
            self.problem(seq, "edit: the event's hash does not recompute")
        if self.first_seq is None:
            self.first_seq = seq
            if seq == 0 and body.get("prev_hash") != GENESIS:
                self.problem(seq, "broken_link: the first event does not start from genesis")
        elif seq == self.last_seq + 1:
            if body.get("prev_hash") != self.last_hash:
                self.problem(seq, "broken_link: prev_hash is not the previous event's hash")
        elif seq > self.last_seq + 1:
            self.problem(seq, f"gap: seqs {self.last_seq + 1}..{seq - 1} missing")
        else:
            self.problem(seq, f"duplicate or reorder: after seq {self.last_seq}")
            self.events += 1
            return
        self.events += 1
        self.last_seq = seq
        self.last_hash = str(digest)

    def covers(self, seqs: Iterable[int]) -> bool:
        """No problem was found at or before the highest of ``seqs``."""
        top = max(seqs, default=-1)
        return not any(s <= top for s in self.problem_seqs)


@dataclass(slots=True)
class Trends:
    """Per-minute counters for the Trends page (keyed by the minute's epoch)."""

    levels: dict[int, list[int]] = field(default_factory=dict)
    timeouts: Counter[int] = field(default_factory=Counter)
    velocity_trips: Counter[int] = field(default_factory=Counter)
    dead_letters: Counter[int] = field(default_factory=Counter)
    refusals: Counter[int] = field(default_factory=Counter)
    #: ``(answered_at, seconds from decision to answer, kind)``.
    answer_times: deque[tuple[float, float, str]] = field(
        default_factory=lambda: deque(maxlen=MAX_ANSWER_TIMES)
    )
    latest: float = 0.0

    def prune(self) -> None:
        horizon = _minute(self.latest) - TREND_MINUTES * 60
        for counter in (self.levels, self.timeouts, self.velocity_trips, self.dead_letters,
                        self.refusals):  # fmt: skip
            if len(counter) > TREND_MINUTES + 10:
                for key in [k for k in counter if k < horizon]:
                    del counter[key]


def _minute(at: float) -> int:
    return int(at // 60 * 60)


@dataclass(slots=True)
class PatternStats:
    """What the console saw of one (pattern, action type): decisions by level and answers."""

    levels: Counter[int] = field(default_factory=Counter)
    approved: int = 0
    rejected: int = 0
    false_positives: int = 0
    aborted: int = 0
    timeouts: int = 0
    successes: int = 0
    failures: int = 0


class ConsoleView:
    """Everything the pages show, folded from records; bounded in size."""

    def __init__(self, *, max_decisions: int = 20_000) -> None:
        self.max_decisions = max_decisions
        #: Decisions in the order they were first seen (the feed is its reverse).
        self.items: OrderedDict[str, Item] = OrderedDict()
        #: Decisions waiting for a human (approvals and abort windows), by id.
        self.open: dict[str, Item] = {}
        self.by_proposal: dict[str, str] = {}
        self.chains: dict[str, ChainStatus] = {}
        self.trends = Trends()
        self.patterns: dict[str, PatternStats] = {}
        self.tables: dict[str, dict[str, Any]] = {t: {} for t in reducers.TABLES}
        self.fleet_events: deque[Step] = deque(maxlen=MAX_FLEET_EVENTS)
        self.audit_records = 0
        self.state_records = 0
        self.unreadable = 0

    # ------------------------------------------------------------------ folding

    def apply_audit(self, record: Any) -> None:
        """Fold one record of the audit topic (an HEC envelope, decoded, or its body)."""
        body = record.get("event", record) if isinstance(record, dict) else None
        if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
            self.unreadable += 1
            return
        self.audit_records += 1
        chain = body.get("chain")
        if isinstance(chain, str):
            status = self.chains.get(chain)
            if status is None:
                status = self.chains[chain] = ChainStatus(chain)
            status.check(body)
        at = epoch(body.get("at")) or 0.0
        self.trends.latest = max(self.trends.latest, at)
        kind = body["kind"]
        raw_data = body.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        actor = str(body.get("actor", ""))
        decision_id = body.get("decision_id")
        event_id = str(body.get("event_id", ""))
        step = Step(kind, at, actor, "", str(chain or ""), int(body.get("seq", -1)), event_id)
        if kind == "dead_letter":
            self.trends.dead_letters[_minute(at)] += 1
            return
        if kind in {"freeze", "unfreeze", "requalification", "requalification_revoked",
                    "policy_load", "policy_rejected"}:  # fmt: skip
            step.text = _fleet_text(kind, data, actor)
            self.fleet_events.append(step)
            return
        if not isinstance(decision_id, str):
            return
        item = self._item(decision_id)
        if item is None:
            return
        if isinstance(body.get("proposal_id"), str) and not item.proposal_id:
            item.proposal_id = body["proposal_id"]
            self.by_proposal[item.proposal_id] = decision_id
        if event_id and any(s.event_id == event_id for s in item.timeline):
            return  # an input redelivered after a crash, sealed again: folded once
        item.chain = item.chain or step.chain
        handler = _HANDLERS.get(kind)
        step.text = handler(self, item, data, step) if handler else kind.replace("_", " ")
        if len(item.timeline) < MAX_TIMELINE:
            item.timeline.append(step)
        if item.status != "open":
            self.open.pop(decision_id, None)
        self.trends.prune()

    def set_value(self, table: str, key: str, value: Any) -> None:
        """A key's whole folded value from ``state.folded`` (``None``: a tombstone)."""
        values = self.tables.get(table)
        if values is None:
            return
        if value is None:
            values.pop(key, None)
        elif key in values or len(values) < MAX_KEYS:
            values[key] = value

    def apply_state(self, update: Any) -> None:
        """Fold one record of the ``state`` topic with the gate's own reducers."""
        if not isinstance(update, dict):
            self.unreadable += 1
            return
        table, key = update.get("table"), update.get("key")
        values = self.tables.get(table) if isinstance(table, str) else None
        if values is None or not isinstance(key, str):
            return
        self.state_records += 1
        if key not in values and len(values) >= MAX_KEYS:
            return
        new = reducers.apply_update(values.get(key), update)
        if new is not None:
            values[key] = new

    def _item(self, decision_id: str) -> Item | None:
        item = self.items.get(decision_id) or self.open.get(decision_id)
        if item is not None:
            return item
        item = Item(decision_id=decision_id)
        self.items[decision_id] = item
        self._evict()
        return item

    def _evict(self) -> None:
        while len(self.items) > self.max_decisions:
            _, old = self.items.popitem(last=False)
            if old.decision_id not in self.open:
                self.by_proposal.pop(old.proposal_id, None)

    def _stats(self, item: Item) -> PatternStats:
        key = f"{item.pattern}|{item.action_type}"
        stats = self.patterns.get(key)
        if stats is None:
            stats = PatternStats()
            if len(self.patterns) < MAX_KEYS:
                self.patterns[key] = stats
        return stats

    # ------------------------------------------------------------------ queries

    def get(self, decision_id: str) -> Item | None:
        """A decision by its id, or by its proposal's id."""
        found = self.items.get(decision_id) or self.open.get(decision_id)
        if found is None and decision_id in self.by_proposal:
            key = self.by_proposal[decision_id]
            found = self.items.get(key) or self.open.get(key)
        return found

    def waiting(self, now: float) -> list[Item]:
        """Approvals and open abort windows, soonest deadline first."""
        out = []
        for item in list(self.open.values()):
            if item.waiting(now):
                out.append(item)
            elif item.level == 3:  # the abort window closed: nothing to answer any more
                item.status = "window closed"
                del self.open[item.decision_id]
        out.sort(key=lambda i: (i.deadline() or float("inf"), i.decision_id))
        return out

    def feed(
        self,
        *,
        level: int | None = None,
        service: str = "",
        pattern: str = "",
        ai_system: str = "",
        limit: int = 100,
    ) -> list[Item]:
        """The newest decisions matching every filter given."""
        out: list[Item] = []
        for item in reversed(self.items.values()):
            if item.level is None:
                continue
            if level is not None and item.level != level:
                continue
            if (service and item.service != service) or (pattern and item.pattern != pattern):
                continue
            if ai_system and item.ai_system != ai_system:
                continue
            out.append(item)
            if len(out) >= limit:
                break
        return out

    def choices(self) -> dict[str, list[str]]:
        """Values offered by the feed's filters (from the state and recent decisions)."""
        services: set[str] = set()
        patterns: set[str] = set()
        ai_systems: set[str] = set()
        for n, item in enumerate(reversed(self.items.values())):
            if n >= 2000:
                break
            services.add(item.service)
            patterns.add(item.pattern)
            ai_systems.add(item.ai_system)
        return {
            "service": sorted(s for s in services if s),
            "pattern": sorted(p for p in patterns if p),
            "ai_system": sorted(a for a in ai_systems if a),
        }

    def pattern_stats(self, item: Item) -> PatternStats:
        return self.patterns.get(f"{item.pattern}|{item.action_type}") or PatternStats()

    def chain_verdict(self, item: Item) -> tuple[bool, str]:
        """Whether the audit chains holding this decision's events verify, and how.

        A decision's events can sit on two chains: the proposal's partition, and the
        partition of ``approvals`` its answers arrived on.
        """
        by_chain: dict[str, list[int]] = {}
        for step in item.timeline:
            by_chain.setdefault(step.chain, []).append(step.seq)
        if not by_chain:
            return False, "no audit event of this decision has been read"
        ok, parts = True, []
        for name, seqs in sorted(by_chain.items()):
            status = self.chains.get(name)
            if status is None:
                ok = False
                parts.append(f"chain {name}: not read")
                continue
            mine = ", ".join(str(s) for s in sorted(seqs))
            if status.covers(seqs):
                start = (
                    "from its start"
                    if status.first_seq == 0
                    else f"from seq {status.first_seq} (earlier events not read)"
                )
                parts.append(
                    f"chain {name}: {status.events} events read {start} to seq "
                    f"{status.last_seq}, every hash recomputes and links to the previous "
                    f"event (this decision: seqs {mine})"
                )
            else:
                ok = False
                parts.append(
                    f"chain {name} (this decision: seqs {mine}): " + "; ".join(status.problems)
                )
        return ok, "; ".join(parts)

    def services(self) -> list[str]:
        names = set(self.tables["budgets"]) | set(self.tables["velocity"])
        names |= {k for k in self.tables["freeze"] if k != "*"}
        for n, item in enumerate(reversed(self.items.values())):
            if n >= 2000:
                break
            if item.service:
                names.add(item.service)
        return sorted(names)

    def velocity(self, service: str, now: float, window_seconds: int) -> int:
        """Autonomous executions of one service inside the velocity window."""
        return reducers.recent_autonomous(
            [self.tables["velocity"].get(service)],
            now=dt.datetime.fromtimestamp(now, tz=dt.UTC),
            window_seconds=window_seconds,
            exclude="",
        )

    def fleet_velocity(self, now: float, window_seconds: int) -> int:
        return reducers.recent_autonomous(
            self.tables["velocity"].values(),
            now=dt.datetime.fromtimestamp(now, tz=dt.UTC),
            window_seconds=window_seconds,
            exclude="",
        )

    def frozen(self, service: str) -> dict[str, Any] | None:
        value = self.tables["freeze"].get(service)
        return value if isinstance(value, dict) and value.get("frozen") else None

    def budget(self, service: str) -> float | None:
        value = self.tables["budgets"].get(service)
        remaining = value.get("remaining") if isinstance(value, dict) else None
        return float(remaining) if isinstance(remaining, int | float) else None

    def fp_rates(self, now: float) -> dict[str, float | None]:
        instant = dt.datetime.fromtimestamp(now, tz=dt.UTC)
        return {
            ai: reducers.ai_fp_rate(value, instant)
            for ai, value in sorted(self.tables["verdicts"].items())
        }

    def requalifications(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for key, value in sorted(self.tables["requalification"].items()):
            pattern, _, action = key.partition("|")
            if isinstance(value, dict):
                yield pattern, action, value

    def policy_state(self) -> dict[str, Any] | None:
        value = self.tables["policy"].get("current")
        return value if isinstance(value, dict) and value.get("yaml") else None


# ---------------------------------------------------------------------- handlers


def _on_received(view: ConsoleView, item: Item, data: dict[str, Any], step: Step) -> str:
    del view
    proposal = data.get("proposal")
    if isinstance(proposal, dict):
        _take_proposal(item, proposal)
    return f"received from {step.actor}"


def _take_proposal(item: Item, proposal: Mapping[str, Any]) -> None:
    action = proposal.get("action") or {}
    target = action.get("target") or {}
    source = proposal.get("source") or {}
    item.pattern = str(proposal.get("pattern", item.pattern))
    item.action_type = str(action.get("type", item.action_type))
    item.service = str(target.get("service", item.service))
    item.ai_system = str(source.get("ai_system", item.ai_system))
    item.model = str(source.get("model") or "")
    confidence = proposal.get("confidence")
    item.confidence = dict(confidence) if isinstance(confidence, dict) else {}
    item.summary = str(proposal.get("summary", ""))


def _on_decision(view: ConsoleView, item: Item, data: dict[str, Any], step: Step) -> str:
    decision = data.get("decision")
    if not isinstance(decision, dict):
        return "decided (unreadable decision)"
    if isinstance(decision.get("proposal"), dict):
        _take_proposal(item, decision["proposal"])
    level = decision.get("level")
    item.level = level if isinstance(level, int) else None
    item.level_name = str(decision.get("level_name", ""))
    item.route = str(decision.get("route", ""))
    item.rule = str(decision.get("deciding_rule", ""))
    item.triggers = tuple(str(t) for t in decision.get("triggers") or ())
    conditions = [c for c in decision.get("conditions") or () if isinstance(c, dict)]
    item.conditions_json = orjson.dumps(conditions)
    item.holding = tuple(str(c.get("name")) for c in conditions if c.get("holds"))
    item.condition_count = len(conditions)
    item.change_record_required = bool(decision.get("change_record_required"))
    item.policy_version = str(decision.get("policy_version", ""))
    item.decided_at = epoch(decision.get("decided_at")) or step.at
    context = decision.get("context")
    history = context.get("history") if isinstance(context, dict) else None
    item.history = history if isinstance(history, dict) else {}
    approval: dict[str, Any] = _dict(data.get("approval"))
    item.asked = tuple(str(a) for a in approval.get("asked") or ())
    stats = view._stats(item)  # noqa: SLF001 - the handlers are the view's own methods
    minute = _minute(step.at)
    if item.level is not None:
        view.trends.levels.setdefault(minute, [0, 0, 0, 0, 0])[item.level] += 1
        stats.levels[item.level] += 1
    if item.rule == "velocity_guard":
        view.trends.velocity_trips[minute] += 1
    text = f"decided Level {item.level} ({item.level_name}) by rule {item.rule}"
    if item.level == 2 and item.status == "decided":
        item.timeout_at = epoch(approval.get("timeout_at") or decision.get("approval_timeout_at"))
        if item.timeout_at is not None:
            item.timeout_seconds = max(0.0, item.timeout_at - item.decided_at)
        item.status = "open"
        view.open[item.decision_id] = item
        asked = ", ".join(item.asked) or "the approvers"
        text += f"; asked {asked} to approve"
    elif item.level == 3 and item.status == "decided":
        item.abort_ends_at = epoch(decision.get("abort_window_ends_at"))
        item.status = "open"
        item.executed = True
        view.open[item.decision_id] = item
        text += "; executing, abort window open"
    elif item.level == 4:
        item.executed = True
        text += "; executing"
    return text


def _on_timeout(view: ConsoleView, item: Item, data: dict[str, Any], step: Step) -> str:
    escalation: dict[str, Any] = _dict(data.get("escalation"))
    number = escalation.get("escalation_number")
    item.escalations = number if isinstance(number, int) else item.escalations + 1
    if item.timeout_at is not None and item.timeout_seconds:
        # The gate moves the deadline on by one timeout after each page.
        item.timeout_at = item.decided_at + item.timeout_seconds * (item.escalations + 1)
    view.trends.timeouts[_minute(step.at)] += 1
    view._stats(item).timeouts += 1  # noqa: SLF001
    return f"no answer in time: paged on-call (escalation {item.escalations})"


def _on_answer(view: ConsoleView, item: Item, data: dict[str, Any], step: Step) -> str:
    kind = ANSWER_KINDS[step.kind]
    item.status = kind
    item.answered_by = step.actor
    item.answered_at = step.at
    item.false_positive = bool(data.get("false_positive"))
    stats = view._stats(item)  # noqa: SLF001
    if kind == "approved":
        stats.approved += 1
    elif kind == "rejected":
        stats.rejected += 1
        stats.false_positives += int(item.false_positive)
    else:
        stats.aborted += 1
    if item.level == 2:
        view.trends.answer_times.append((step.at, max(0.0, step.at - item.decided_at), kind))
    channel = data.get("channel")
    via = f" via {channel}" if isinstance(channel, str) and channel else ""
    extra = " (false positive)" if item.false_positive else ""
    record = data.get("change_record")
    extra += f", change record {record}" if isinstance(record, str) and record else ""
    return f"{kind} by {step.actor}{via}{extra}"


def _on_refused(view: ConsoleView, _item: Item, data: dict[str, Any], step: Step) -> str:
    view.trends.refusals[_minute(step.at)] += 1
    return (
        f"{data.get('kind', 'answer')} by {step.actor} refused by the gate: "
        f"{data.get('reason', '?')}"
    )


def _on_command(view: ConsoleView, item: Item, data: dict[str, Any], step: Step) -> str:
    del view
    command = data.get("command", "?")
    if command == "execute":
        item.executed = True
    return f"{command} command sent to executors (by {data.get('by', step.actor)})"


def _on_outcome(view: ConsoleView, item: Item, data: dict[str, Any], step: Step) -> str:
    del step
    outcome: dict[str, Any] = _dict(data.get("outcome"))
    result, verification = outcome.get("result", "?"), outcome.get("verification", "?")
    item.outcome = f"{result}, verification {verification}"
    stats = view._stats(item)  # noqa: SLF001
    if result == "success" and verification != "failed" and not outcome.get("suboptimal"):
        stats.successes += 1
    else:
        stats.failures += 1
    return f"outcome: {item.outcome}"


def _on_verification_failed(view: ConsoleView, item: Item, data: dict[str, Any], step: Step) -> str:
    del view, data, step, item
    return "verification failed: paged on-call"


_HANDLERS = {
    "proposal_received": _on_received,
    "decision": _on_decision,
    "timeout_escalation": _on_timeout,
    "approval_accepted": _on_answer,
    "rejection": _on_answer,
    "abort": _on_answer,
    "answer_refused": _on_refused,
    "execute_command": _on_command,
    "outcome": _on_outcome,
    "verification_failed": _on_verification_failed,
}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _fleet_text(kind: str, data: dict[str, Any], actor: str) -> str:
    command: dict[str, Any] = _dict(data.get("command"))
    scope = command.get("service") or "the whole fleet"
    if kind in {"freeze", "unfreeze"}:
        return f"{kind} of {scope} by {actor}"
    if kind.startswith("requalification"):
        what = f"{command.get('pattern')} / {command.get('action_type')}"
        return f"{kind.replace('_', ' ')} of {what} by {actor}"
    if kind == "policy_load":
        return f"policy v{data.get('version')} loaded by {actor}"
    return f"policy refused (sent by {actor})"
