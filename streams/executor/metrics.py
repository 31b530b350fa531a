"""Prometheus metrics of an executor, on a registry the caller passes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class ExecutorMetrics:
    """Every metric an executor exports; names carry their unit."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.actions = Counter(
            "escalation_executor_actions_total",
            "Actions run, by step (execute, rollback) and result",
            ["step", "result"],
            registry=r,
        )
        self.verifications = Counter(
            "escalation_executor_verifications_total",
            "Level 4 verifications, by result",
            ["result"],
            registry=r,
        )
        self.refused = Counter(
            "escalation_executor_refused_total",
            "Records not acted on: unsigned, forged, tampered, not executable, ...",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "escalation_executor_duplicates_total",
            "Records of an action already run (redelivered, or after a restart): not run again",
            registry=r,
        )
        self.aborted = Counter(
            "escalation_executor_aborted_before_run_total",
            "Level 3 decisions aborted before this executor ran them: never run",
            registry=r,
        )
        self.outcomes = Counter(
            "escalation_executor_outcomes_total",
            "Outcomes written to the outcomes topic, by delivery result",
            ["delivered"],
            registry=r,
        )
        self.duration = Histogram(
            "escalation_executor_action_duration_seconds",
            "Time to run an action (and verify it)",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
