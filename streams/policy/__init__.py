# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The pure policy core: the policy document, its loader, and the evaluator.

Imports nothing from faust, Kafka clients or prometheus_client, and never touches
files, clocks or the network (a unit test proves the imports).
"""

from streams.policy.evaluate import decision_id_for, evaluate
from streams.policy.loader import parse_policy
from streams.policy.model import ActionAuthorisation, Policy

__all__ = ["ActionAuthorisation", "Policy", "decision_id_for", "evaluate", "parse_policy"]
