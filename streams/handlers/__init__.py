"""PURE handlers: one function per input, returning every consequence as :class:`Effects`.

Like ``streams.policy`` and ``streams.state``, nothing here imports faust, Kafka
clients or prometheus_client, or reads a clock: the instant comes in with the input
(:class:`Origin`). ``streams.topology`` decodes, calls a handler, and emits.
"""

from streams.handlers.answers import on_answer, on_timeout
from streams.handlers.control import on_control
from streams.handlers.effects import (
    NOTHING,
    AuditDraft,
    Count,
    Effects,
    Origin,
    Send,
    StateView,
)
from streams.handlers.inputs import on_budget, on_outcome
from streams.handlers.letters import dead_letter
from streams.handlers.placement import misplaced
from streams.handlers.proposals import Decided, decide
from streams.handlers.provenance import on_signed_budget, on_signed_outcome, refused_input

__all__ = [
    "NOTHING",
    "AuditDraft",
    "Count",
    "Decided",
    "Effects",
    "Origin",
    "Send",
    "StateView",
    "dead_letter",
    "decide",
    "misplaced",
    "on_answer",
    "on_budget",
    "on_control",
    "on_outcome",
    "on_signed_budget",
    "on_signed_outcome",
    "on_timeout",
    "refused_input",
]
