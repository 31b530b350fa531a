"""PURE reducers that fold outcomes, verdicts, budgets and commands into the context.

Values are plain JSON-able dicts (they live in Faust tables); time is always passed
in. Nothing here imports faust or Kafka clients, or reads a clock.
"""

from streams.state.reducers import (
    FP_WINDOW_SECONDS,
    TABLES,
    ai_fp_rate,
    apply_budget,
    apply_freeze,
    apply_history,
    apply_requalification,
    apply_update,
    apply_verdict,
    build_context,
    history_key,
    recent_autonomous,
    record_autonomous,
)

__all__ = [
    "FP_WINDOW_SECONDS",
    "TABLES",
    "ai_fp_rate",
    "apply_budget",
    "apply_freeze",
    "apply_history",
    "apply_requalification",
    "apply_update",
    "apply_verdict",
    "build_context",
    "history_key",
    "recent_autonomous",
    "record_autonomous",
]
