"""Sample traffic for the demo, the benchmarks and the integration tests.

A small fleet whose seeded history, budgets and re-qualifications make the stream
reach every level: untrusted AI (0), low confidence / novel patterns (1), regulated
and wide-blast-radius actions (2), well-known patterns (3) and re-qualified toil (4).
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

from streams.models import (
    ControlCommand,
    ErrorBudgetUpdate,
    HistoryRecord,
    Proposal,
)


@dataclass(frozen=True)
class Scenario:
    """One kind of proposal and the level it reaches once the state is seeded."""

    name: str
    expected_level: int
    pattern: str
    action: str
    service: str
    kind: str = "Deployment"
    namespace: str = "shop"
    environment: str = "production"
    ai_system: str = "holmesgpt"
    confidence: float = 0.93
    replica_fraction: float = 0.1
    parameters: tuple[tuple[str, Any], ...] = ()
    history: int = 0  # successful past incidents to seed
    requalify: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("oom-restart", 4, "oom-kill/stateless-deployment", "rolling_restart", "checkout-api",
             history=12, requalify=True),
    Scenario("log-gateway", 4, "telemetry-outage/log-gateway", "log_pipeline_restart",
             "log-gateway", namespace="observability", history=15, requalify=True),
    Scenario("deadlock-statefulset", 3, "deadlock/worker-pool", "rolling_restart", "orders-worker",
             kind="StatefulSet", history=5),
    Scenario("scale-big", 3, "cpu-saturation/hpa", "scale_up", "search-api",
             parameters=(("replicas_delta", 4),), history=6),
    Scenario("cert-second", 2, "cert-expiry/ingress", "certificate_rotation", "edge-proxy",
             history=1),
    Scenario("payments", 2, "timeouts/payment-gateway", "rolling_restart", "payments-api",
             namespace="payments", history=12, requalify=True),
    Scenario("wide-blast", 2, "oom-kill/stateless-deployment", "rolling_restart", "catalog-api",
             replica_fraction=0.4, history=12),
    Scenario("novel", 1, "kernel-panic/node", "cordon_node", "node-pool-a", kind="Node"),
    Scenario("low-confidence", 1, "latency/db-pool", "rolling_restart", "inventory-api",
             confidence=0.5, history=4),
    Scenario("untrusted", 0, "oom-kill/stateless-deployment", "rolling_restart", "checkout-api",
             ai_system="shadow-agent", history=12),
)  # fmt: skip

SERVICES_BUDGET = {s.service: 0.9 for s in SCENARIOS}


def _at(base: dt.datetime, seconds: float) -> dt.datetime:
    return base + dt.timedelta(seconds=seconds)


def proposal(scenario: Scenario, number: int, *, at: dt.datetime, tag: str = "") -> Proposal:
    """The ``number``-th proposal of a scenario (unique id, deterministic content)."""
    return Proposal.model_validate(
        {
            "schema_version": 1,
            "proposal_id": f"p-{tag}{scenario.name}-{number:06d}",
            "created_at": at.isoformat(),
            "source": {"ai_system": scenario.ai_system, "model": "llama3.1:70b"},
            "pattern": scenario.pattern,
            "action": {
                "type": scenario.action,
                "target": {
                    "service": scenario.service,
                    "namespace": scenario.namespace,
                    "environment": scenario.environment,
                    "kind": scenario.kind,
                },
                "parameters": dict(scenario.parameters),
                "idempotent": True,
                "reversible": True,
                "rollback_seconds": 60,
            },
            "confidence": {"model": scenario.confidence, "heuristic": scenario.confidence},
            "blast_radius": {
                "services": 1,
                "namespaces": 1,
                "replica_fraction": scenario.replica_fraction,
                "traffic_fraction": 0.05,
            },
            "regulated": [],
            "summary": f"{scenario.name}: {scenario.pattern} on {scenario.service}",
        }
    )


def history_records(now: dt.datetime) -> list[HistoryRecord]:
    """Past incidents: the seeded history of every scenario, all true positives."""
    records = []
    seen: set[tuple[str, str]] = set()
    for scenario in SCENARIOS:
        key = (scenario.pattern, scenario.action)
        if key in seen or scenario.ai_system != "holmesgpt":
            continue
        seen.add(key)
        records += [
            HistoryRecord(
                pattern=scenario.pattern,
                action_type=scenario.action,
                outcome="success",
                ai_system="holmesgpt",
                verdict="true_positive",
                service=scenario.service,
                at=_at(now, -86_400 + i),
            )
            for i in range(scenario.history)
        ]
    return records


def budgets(now: dt.datetime) -> list[ErrorBudgetUpdate]:
    """A healthy error budget for every service of the fleet."""
    return [
        ErrorBudgetUpdate(schema_version=1, service=service, remaining=value, at=now)
        for service, value in SERVICES_BUDGET.items()
    ]


def requalifications(now: dt.datetime, user: str = "alice") -> list[ControlCommand]:
    """A human re-qualification of every Level 4 automation of the sample fleet."""
    done: set[tuple[str, str]] = set()
    out = []
    for s in SCENARIOS:
        if s.requalify and (s.pattern, s.action) not in done:
            done.add((s.pattern, s.action))
            out.append(
                ControlCommand(
                    schema_version=1,
                    command="requalify",
                    user=user,
                    pattern=s.pattern,
                    action_type=s.action,
                    reason="quarterly re-qualification review",
                    at=now,
                )
            )
    return out


def stream(count: int, *, start: dt.datetime, tag: str = "") -> list[tuple[Scenario, Proposal]]:
    """``count`` proposals cycling through every scenario."""
    cycle = itertools.cycle(SCENARIOS)
    return [
        (s, proposal(s, i, at=_at(start, i * 0.01), tag=tag))
        for i, s in zip(range(count), cycle, strict=False)
    ]
