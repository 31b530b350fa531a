# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Reviewing a policy change before it goes live: replay, policy tests, policy diff.

``replay`` re-decides recorded decisions under a candidate policy, ``policytest``
runs a policy's own table of cases (like ``opa test``), and ``diff`` says in words
what a new policy version changes and whether each change grants more autonomy.
The command line lives in ``streams.review.cli``; these modules never write to Kafka.
"""

from streams.review.diff import PolicyChange, PolicyDiff, diff_policies
from streams.review.policytest import Case, CaseResult, Expectation, parse_case_file, run_case
from streams.review.replay import ConditionChange, LevelChange, Record, ReplayReport, replay

__all__ = [
    "Case",
    "CaseResult",
    "ConditionChange",
    "Expectation",
    "LevelChange",
    "PolicyChange",
    "PolicyDiff",
    "Record",
    "ReplayReport",
    "diff_policies",
    "parse_case_file",
    "replay",
    "run_case",
]
