"""Prometheus metrics of the Slack service (served on its own port, at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class SlackMetrics:
    """Every metric ``escalation slack`` exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.refused = Counter(
            "escalation_slack_refused_total",
            "Interactivity requests and clicks that changed nothing, by reason",
            ["reason"],
            registry=r,
        )
        self.published = Counter(
            "escalation_slack_answers_published_total",
            "Signed answers published on approvals, by kind",
            ["kind"],
            registry=r,
        )
        self.api_calls = Counter(
            "escalation_slack_api_calls_total",
            "Slack Web API calls by method and result (ok / error)",
            ["method", "result"],
            registry=r,
        )
        self.records = Counter(
            "escalation_slack_records_total",
            "Gate records read by the service, by topic",
            ["topic"],
            registry=r,
        )
        self.ready = Gauge(
            "escalation_slack_ready",
            "1 once the service consumes the gate's topics and serves interactivity",
            registry=r,
        )
