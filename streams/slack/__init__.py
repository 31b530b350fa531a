"""Slack approvals: the ``escalation slack`` service (docs/slack.md)."""
