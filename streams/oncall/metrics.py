"""The pager's Prometheus metrics, on a registry of their own (tests pass a fresh one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class PagerMetrics:
    """Every metric ``escalation pager`` exports; names carry their unit."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "escalation_pager_records_total", "oncall records read, by type", ["type"], registry=r
        )
        self.invalid = Counter(
            "escalation_pager_invalid_records_total",
            "oncall records that are not a valid escalation or resolution (skipped)",
            registry=r,
        )
        self.refused = Counter(
            "escalation_pager_refused_resolutions_total",
            "Resolutions whose gate signature did not verify (refused: the pages stay open)",
            ["reason"],
            registry=r,
        )
        self.unverified = Counter(
            "escalation_pager_unverified_escalations_total",
            "Escalations paged although the gate's signature did not verify",
            ["reason"],
            registry=r,
        )
        self.deliveries = Counter(
            "escalation_pager_deliveries_total",
            "HTTP calls to a paging system: ok, failed (tried again) or rejected (4xx, dropped)",
            ["system", "action", "result"],
            registry=r,
        )
        self.open_pages = Gauge(
            "escalation_pager_open_pages", "Escalations paged and not yet resolved", registry=r
        )
        self.ready = Gauge(
            "escalation_pager_ready",
            "1 once the pager has rebuilt its book and consumes",
            registry=r,
        )
