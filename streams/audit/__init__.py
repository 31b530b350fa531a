# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The audit trail: Splunk HEC envelopes in hash chains, and their verification."""

from streams.audit.chain import GENESIS, ChainHead, event_hash, seal
from streams.audit.verify import ERROR_KINDS, Finding, VerifyReport, verify

__all__ = [
    "ERROR_KINDS",
    "GENESIS",
    "ChainHead",
    "Finding",
    "VerifyReport",
    "event_hash",
    "seal",
    "verify",
]
