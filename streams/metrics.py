"""Prometheus metrics of the gate, built on a registry the caller passes (tests use a fresh one)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric the gate exports; names carry their unit."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.decisions = Counter(
            "escalation_decisions_total",
            "Decisions by level and route",
            ["level", "route"],
            registry=r,
        )
        self.triggers = Counter(
            "escalation_triggers_total", "Escalation triggers fired", ["trigger"], registry=r
        )
        self.latency = Histogram(
            "escalation_decision_latency_seconds",
            "Time from a proposal's Kafka timestamp to its decision being sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "escalation_dead_letters_total",
            "Input sent to the dead-letter topic",
            ["reason", "topic"],
            registry=r,
        )
        self.ai_fp_rate = Gauge(
            "escalation_ai_false_positive_rate",
            "Rolling 7-day false-positive rate of an AI system's proposals",
            ["ai_system"],
            registry=r,
        )
        self.policy_info = Gauge(
            "escalation_policy_info", "Policy in force (value 1)", ["version", "digest"], registry=r
        )
        self.calibration_error = Gauge(
            "escalation_ai_calibration_error",
            "How far an AI system's reported confidence is from how often it was right "
            "(measure ece: expected calibration error; brier: Brier score)",
            ["ai_system", "model", "measure"],
            registry=r,
        )
        self.policy_overdue = Gauge(
            "escalation_policy_review_overdue",
            "1 when the policy in force is past its next review date (decisions capped at 2)",
            registry=r,
        )
        self.policy_rejected = Counter(
            "escalation_policy_reloads_rejected_total", "Invalid policies refused", registry=r
        )
        self.answers_refused = Counter(
            "escalation_answers_refused_total", "Human answers refused", ["reason"], registry=r
        )
        self.answers_accepted = Counter(
            "escalation_answers_accepted_total", "Human answers accepted", ["kind"], registry=r
        )
        self.commands_refused = Counter(
            "escalation_commands_refused_total",
            "Operator commands refused (signature, signer, role, two-person rule)",
            ["reason", "command"],
            registry=r,
        )
        self.inputs_refused = Counter(
            "escalation_inputs_refused_total",
            "Outcomes and error budgets refused (not signed by an executor / SLO source)",
            ["topic", "reason"],
            registry=r,
        )
        self.repartitioned = Counter(
            "escalation_proposals_repartitioned_total",
            "Proposals that arrived on another partition than their service's",
            registry=r,
        )
        self.oncall = Counter(
            "escalation_oncall_escalations_total", "Pages sent to on-call", ["reason"], registry=r
        )
        self.audit_events = Counter(
            "escalation_audit_events_total", "Audit events written", ["kind"], registry=r
        )
        self.state_applied = Counter(
            "escalation_state_updates_applied_total",
            "State updates this worker's read model has applied",
            ["table"],
            registry=r,
        )
        self.proposals_waiting = Gauge(
            "escalation_proposals_waiting",
            "Proposals read ahead and not yet decided (streams/topology/lanes.py)",
            registry=r,
        )
        self.ready = Gauge(
            "escalation_worker_ready",
            "1 once the state mirror caught up and agents run",
            registry=r,
        )
        self.messages = Counter(
            "escalation_messages_total", "Input messages processed", ["topic"], registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start the scrape endpoint; returns the bound port (``0`` picks a free one)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)

    def inc(self, metric: Counter, *labels: str) -> None:
        """``metric.labels(*labels).inc()`` with the labelled child cached: the hot path
        counts several things per message, and ``labels()`` validates and locks each time."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        child.inc()
