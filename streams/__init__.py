"""Escalation Gate: route AI-proposed remediations to a human-approved automation level."""

__version__ = "0.1.0"
