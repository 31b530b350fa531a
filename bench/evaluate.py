# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""How fast is the policy core? ``python bench/evaluate.py [--count N] [--repeats R]``.

Builds a mixed set of proposals and contexts that reaches every level, then measures
on one core, in the same run:

- ``evaluate()`` evaluations per second (the gate's per-message decision), and
- ``Proposal.model_validate_json`` validations per second on the same proposals' JSON
  bytes (the decode every message pays before it can be decided),

and prints both with their ratio, which is steadier across machines than either
figure. The two alternate, one pass of each per repeat, so a change in the machine's
load falls on both. Each pass is timed by the wall clock and by the thread's CPU time
(``time.thread_time``): on a shared machine the wall clock also counts the time other
processes held the core, the CPU time does not.

The target (issue 19) is 100,000 evaluations per second, judged on the median of the
repeats by the wall clock; the result line says PASS or BELOW TARGET but the exit
code stays 0, because a shared machine is noisy. Exit code 2 means the set did not
reach every level (a broken benchmark, not a slow one).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from streams.models import Context, Proposal
from streams.policy import Policy, evaluate, parse_policy

if TYPE_CHECKING:
    from collections.abc import Callable

TARGET_PER_SECOND = 100_000
DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "policies" / "escalation-policy.yaml"
NOW = "2026-11-28T10:00:05Z"

# Share of each kind of input in the set; together they reach every level.
PROFILES = {
    "autonomous": 30,  # Level 4, or 3 when a Level 4 constraint fails
    "conditional": 20,  # Level 3
    "supervised": 25,  # Level 2: confidence, blast radius, budget, regulated, velocity
    "assist": 20,  # Level 1: novelty, low confidence, FP rate, freeze, exhausted budget
    "manual": 5,  # Level 0: an untrusted AI system
}
ACTIONS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("rolling_restart", {}, "Deployment"),
    ("scale_up", {"replicas_delta": 2}, "Deployment"),
    ("certificate_rotation", {}, "Certificate"),
    ("log_pipeline_restart", {}, "DaemonSet"),
)


def _proposal(rng: random.Random, index: int) -> dict[str, Any]:
    action, parameters, kind = rng.choice(ACTIONS)
    environment = "staging" if action == "certificate_rotation" else "production"
    return {
        "schema_version": 1,
        "proposal_id": f"p-{index:06d}",
        "created_at": "2026-11-28T10:00:00Z",
        "source": {"ai_system": "holmesgpt", "model": "llama3.1:70b"},
        "pattern": rng.choice(("oom-kill/stateless-deployment", "deadlock/worker", "tls/expiry")),
        "action": {
            "type": action,
            "target": {
                "service": rng.choice(("checkout-api", "search", "cart", "otel-gateway")),
                "namespace": rng.choice(("shop", "platform", "observability")),
                "environment": environment,
                "kind": kind,
            },
            "parameters": dict(parameters),
            "idempotent": True,
            "reversible": True,
            "rollback_seconds": rng.choice((30, 60, 120, 300)),
        },
        "confidence": {"model": rng.uniform(0.88, 0.99), "heuristic": rng.uniform(0.86, 0.99)},
        "blast_radius": {
            "services": 1,
            "namespaces": 1,
            "replica_fraction": rng.uniform(0.0, 0.2),
            "traffic_fraction": rng.uniform(0.0, 0.2),
        },
        "regulated": [],
        "summary": "synthetic benchmark proposal",
    }


def _context(rng: random.Random) -> dict[str, Any]:
    seen = rng.randint(10, 200)
    requalified = f"2026-{rng.choice(('09', '10', '11'))}-{rng.randint(10, 27):02d}T00:00:00Z"
    return {
        "now": NOW,
        "history": {"seen": seen, "successes": seen, "failures": 0},
        "error_budget_remaining": rng.uniform(0.76, 1.0),
        "ai_false_positive_rate_7d": rng.uniform(0.0, 0.2),
        "requalified_at": requalified,
        "requalification_revoked": False,
        "recent_autonomous": {"service": rng.randint(0, 2), "fleet": rng.randint(0, 19)},
        "frozen": False,
    }


def _shape(profile: str, p: dict[str, Any], c: dict[str, Any], rng: random.Random) -> None:
    """Turn an autonomous-looking pair into one that the profile's level decides."""
    if profile == "autonomous":
        if rng.random() < 0.2:  # a Level 4 constraint fails: Level 3
            p["action"]["idempotent"] = False
    elif profile == "conditional":
        seen = rng.randint(3, 9)
        c["history"] = {"seen": seen, "successes": seen, "failures": 0}
    elif profile == "supervised":
        change = rng.randrange(7)
        if change == 0:
            p["confidence"]["model"] = rng.uniform(0.6, 0.84)
        elif change == 1:
            p["blast_radius"]["services"] = rng.randint(2, 5)
        elif change == 2:
            c["error_budget_remaining"] = rng.choice((None, 0.5))
        elif change == 3:
            p["regulated"] = ["PCI-DSS"]
        elif change == 4:
            p["action"]["target"]["namespace"] = "ehr"
        elif change == 5:
            c["recent_autonomous"]["service"] = 3
        else:
            c["history"] = {"seen": 1, "successes": 1, "failures": 0}
    elif profile == "assist":
        change = rng.randrange(5)
        if change == 0:
            c["history"] = {"seen": 0, "successes": 0, "failures": 0}
        elif change == 1:
            p["confidence"]["heuristic"] = rng.uniform(0.1, 0.59)
        elif change == 2:
            c["ai_false_positive_rate_7d"] = rng.uniform(0.21, 0.6)
        elif change == 3:
            c["frozen"] = True
        else:
            c["error_budget_remaining"] = rng.uniform(0.0, 0.24)
    else:
        p["source"]["ai_system"] = rng.choice(("copilot-ops", "unknown-agent"))


def build_set(count: int, seed: int = 1) -> list[tuple[Proposal, Context, bytes]]:
    """``count`` validated (proposal, context, proposal JSON bytes), every level present."""
    rng = random.Random(seed)
    profiles = rng.choices(list(PROFILES), weights=list(PROFILES.values()), k=count)
    out = []
    for index, profile in enumerate(profiles):
        p, c = _proposal(rng, index), _context(rng)
        _shape(profile, p, c, rng)
        raw = orjson.dumps(p)
        out.append((Proposal.model_validate_json(raw), Context.model_validate(c), raw))
    return out


def _timed(run: Callable[[], None], count: int) -> tuple[float, float]:
    """One pass of ``run``: (per second by the wall clock, per second of CPU time)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return count / wall, count / cpu if cpu > 0 else float("inf")


def _summary(rates: list[float]) -> dict[str, float]:
    return {"best": max(rates), "median": statistics.median(rates)}


def measure(
    items: list[tuple[Proposal, Context, bytes]], policy: Policy, repeats: int
) -> dict[str, Any]:
    """Both rates over ``repeats`` alternating passes, and their ratio per pass."""
    pairs = [(p, c) for p, c, _ in items]
    raws = [raw for _, _, raw in items]
    validate = Proposal.model_validate_json

    def evaluations() -> None:
        for proposal, context in pairs:
            evaluate(proposal, context, policy)

    def validations() -> None:
        for raw in raws:
            validate(raw)

    evaluations()  # warm up caches (and compile the policy) before timing either
    validations()
    evals: list[tuple[float, float]] = []
    valids: list[tuple[float, float]] = []
    for _ in range(repeats):
        evals.append(_timed(evaluations, len(pairs)))
        valids.append(_timed(validations, len(raws)))
    return {
        "evaluations_per_second": _summary([wall for wall, _ in evals]),
        "validations_per_second": _summary([wall for wall, _ in valids]),
        "evaluations_per_cpu_second": _summary([cpu for _, cpu in evals]),
        "validations_per_cpu_second": _summary([cpu for _, cpu in valids]),
        # Per repeat, the two passes back to back: the ratio of neighbours.
        "ratio_per_repeat": [e[0] / v[0] for e, v in zip(evals, valids, strict=True)],
    }


def _pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    return "not pinned (no sched_setaffinity)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2_000, help="inputs in the mixed set")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes over the set")
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="policy file")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    pinned = _pin_to_one_core()
    policy = parse_policy(args.policy.read_bytes(), source=args.policy.name)
    items = build_set(args.count)
    levels = Counter(evaluate(p, c, policy).level for p, c, _ in items)
    if set(levels) != {0, 1, 2, 3, 4}:
        print(f"the benchmark set does not reach every level: {dict(levels)}", file=sys.stderr)
        return 2

    figures = measure(items, policy, args.repeats)
    evals = figures["evaluations_per_second"]
    valids = figures["validations_per_second"]
    cpu = figures["evaluations_per_cpu_second"]
    cpu_valids = figures["validations_per_cpu_second"]
    ratio = statistics.median(figures["ratio_per_repeat"])
    verdict = "PASS" if evals["median"] >= TARGET_PER_SECOND else "BELOW TARGET"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.json:
        figures |= {
            "ratio": ratio,
            "target_per_second": TARGET_PER_SECOND,
            "verdict": verdict,
            "levels": dict(sorted(levels.items())),
            "load_average_1m": load,
        }
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"set: {len(items)} proposals, levels {dict(sorted(levels.items()))}; {pinned}")
    print(
        f"policy: {args.policy.name} v{policy.version}; {args.repeats} repeats, "
        f"load average {load:.2f}"
    )
    print(
        f"evaluate():                    {evals['median']:>10,.0f}/s median, "
        f"{evals['best']:>10,.0f}/s best"
    )
    print(
        f"Proposal.model_validate_json:  {valids['median']:>10,.0f}/s median, "
        f"{valids['best']:>10,.0f}/s best"
    )
    print(
        f"per CPU second: evaluate() {cpu['median']:,.0f}/s, "
        f"model_validate_json {cpu_valids['median']:,.0f}/s (medians)"
    )
    print(f"ratio evaluations/validations: {ratio:.2f} (median of the repeats' ratios)")
    print(
        f"{verdict}: {evals['median']:,.0f} evaluations/s (median) against a target of "
        f"{TARGET_PER_SECOND:,}/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
