"""The console's Prometheus metrics (on a port of their own, ESCALATION_CONSOLE_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ConsoleMetrics:
    """Refusals, messages sent, and the size of the view; names carry their unit."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.refused = Counter(
            "escalation_console_requests_refused_total",
            "Requests the console refused: unauthenticated, csrf, bad_password, bad_field",
            ["reason"],
            registry=r,
        )
        self.sent = Counter(
            "escalation_console_messages_sent_total",
            "Signed messages the console wrote: approve, reject, abort, freeze, unfreeze",
            ["kind"],
            registry=r,
        )
        self.sign_ins = Counter(
            "escalation_console_sign_ins_total", "Successful local sign-ins", registry=r
        )
        self.waiting = Gauge(
            "escalation_console_waiting", "Approvals and abort windows waiting", registry=r
        )
        self.decisions = Gauge(
            "escalation_console_decisions_held", "Decisions in the console's view", registry=r
        )
