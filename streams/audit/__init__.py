# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The audit trail: Splunk HEC envelopes around hash-chained bodies, and their verification.

The verifier is exported as :func:`verify_records` so that the name
``streams.audit.verify`` stays the module (where it is :func:`streams.audit.verify.verify`).
"""

from streams.audit.chain import GENESIS, ChainHead, body_hash, event_hash, seal
from streams.audit.verify import ERROR_KINDS, NOTE_KINDS, Finding, VerifyReport
from streams.audit.verify import verify as verify_records

__all__ = [
    "ERROR_KINDS",
    "GENESIS",
    "NOTE_KINDS",
    "ChainHead",
    "Finding",
    "VerifyReport",
    "body_hash",
    "event_hash",
    "seal",
    "verify_records",
]
