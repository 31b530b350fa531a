"""PURE: what the pager does with each record on ``oncall``, as values.

The pager holds a *book* of open pages: for every decision, the escalations it paged
and has not yet resolved. An escalation opens a page (one Alertmanager alert and one
PagerDuty incident, both named by the escalation id); a resolution closes every page
of its decision; a keep-alive re-posts every open alert, because Alertmanager
resolves an alert by itself once its ``endsAt`` passes. Nothing here reads a clock,
a socket or the environment: the instant and the settings come in as arguments, and
the HTTP calls go out as :class:`PostAlerts` and :class:`PagerDutyEvent` values that
the service (``streams/oncall/service.py``) performs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from streams.models import OncallEscalation, OncallResolution
from streams.models.codec import parse_json, validate

ALERT_NAMES = {
    "approval_timeout": "EscalationApprovalTimeout",
    "verification_failed": "EscalationVerificationFailed",
}
#: PagerDuty severities: an unanswered approval waits for a human, a failed
#: verification is an autonomous action that went wrong.
SEVERITIES = {"approval_timeout": "error", "verification_failed": "critical"}
PD_SUMMARY_MAX = 1024  # PagerDuty refuses a longer payload.summary


@dataclass(frozen=True, slots=True)
class PagerConfig:
    """What the pure rules need of the settings."""

    default_target: str = "oncall"
    console_url: str | None = None
    #: How often open alerts are re-posted; each post sets ``endsAt`` four of these
    #: ahead (Prometheus' own rule), so one lost post does not resolve an alert.
    repost: dt.timedelta = dt.timedelta(seconds=60)
    #: An approval page older than this is no longer re-posted (the gate forgets an
    #: entry after a week, so no answer can resolve it any more).
    max_open: dt.timedelta = dt.timedelta(days=7)
    #: A failed verification has no answer to wait for: its alert fires this long.
    event_hold: dt.timedelta = dt.timedelta(hours=1)

    @property
    def ttl(self) -> dt.timedelta:
        """How far ahead of each post an open alert's ``endsAt`` is set."""
        return 4 * self.repost


@dataclass(frozen=True, slots=True)
class Page:
    """One escalation the pager paged, with the target it paged."""

    escalation: OncallEscalation
    target: str
    partition: int = 0
    #: Why the gate's signature did not verify ("" when it did, or is not checked):
    #: paged all the same (a forged page asks humans, it never decides), and said so.
    unverified: str = ""

    @property
    def dedup_key(self) -> str:
        """PagerDuty's dedup key and the alert's identity: the escalation id."""
        return self.escalation.escalation_id

    def expires_at(self, config: PagerConfig) -> dt.datetime:
        """When the pager stops re-posting this page if nobody resolves it."""
        hold = config.event_hold if self.is_event else config.max_open
        return self.escalation.at + hold

    @property
    def is_event(self) -> bool:
        """A failed verification: nothing will answer it, it fires for a while."""
        return self.escalation.reason == "verification_failed"


@dataclass(frozen=True, slots=True)
class PostAlerts:
    """``POST /api/v2/alerts`` with these alerts (Alertmanager's postableAlert JSON)."""

    alerts: tuple[dict[str, Any], ...]
    why: Literal["open", "keepalive", "resolve"]


@dataclass(frozen=True, slots=True)
class PagerDutyEvent:
    """One Events API v2 event: trigger or resolve, by dedup key, for a target."""

    action: Literal["trigger", "resolve"]
    dedup_key: str
    target: str
    summary: str = ""
    source: str = ""
    severity: str = "error"
    payload: dict[str, Any] = field(default_factory=dict)
    custom_details: dict[str, Any] = field(default_factory=dict)
    links: tuple[dict[str, str], ...] = ()


Effect = PostAlerts | PagerDutyEvent


@dataclass(frozen=True, slots=True)
class Book:
    """Open pages by decision id, and when recently resolved decisions were resolved."""

    open: dict[str, tuple[Page, ...]] = field(default_factory=dict)
    resolved: dict[str, dt.datetime] = field(default_factory=dict)

    def pages(self) -> tuple[Page, ...]:
        """Every open page, oldest decision first."""
        return tuple(page for pages in self.open.values() for page in pages)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A handler's result: the next book and the HTTP calls to make."""

    book: Book
    effects: tuple[Effect, ...] = ()
    note: str = ""  # why nothing happened, for the log ("" when something did)


# ------------------------------------------------------------------ rendering


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def console_link(config: PagerConfig, decision_id: str) -> str | None:
    """The console page of a decision, when a console URL is configured."""
    if not config.console_url:
        return None
    return f"{config.console_url.rstrip('/')}/decisions/{decision_id}"


def how_to_answer(escalation: OncallEscalation) -> str:
    """The commands that answer the page, as an on-call human would type them."""
    decision = escalation.decision_id
    if escalation.reason == "verification_failed":
        return (
            f"the autonomous {escalation.action_type} on {escalation.service} failed its "
            f"verification and its re-qualification is revoked: investigate, then "
            f"`escalation requalify {escalation.pattern} {escalation.action_type} --as USER` "
            "once it is safe again"
        )
    return (
        f"answer with `escalation approve {decision} --as USER` (add --change-record ID "
        f"for a regulated action) or `escalation reject {decision} --as USER "
        "[--false-positive]`; the approval stays open until a human answers"
    )


def labels(page: Page) -> dict[str, str]:
    """The alert's identity in Alertmanager: one alert per escalation."""
    esc = page.escalation
    level = (
        esc.level if esc.level is not None else (2 if esc.reason == "approval_timeout" else None)
    )
    return {
        "alertname": ALERT_NAMES[esc.reason],
        "service": esc.service,
        "reason": esc.reason,
        "level": "unknown" if level is None else str(level),
        "escalation": page.target,
        "escalation_number": str(esc.escalation_number),
        "decision_id": esc.decision_id,
    }


def alert(page: Page, ends_at: dt.datetime, config: PagerConfig) -> dict[str, Any]:
    """Alertmanager's postableAlert for ``page``, ending at ``ends_at``."""
    esc = page.escalation
    annotations = {
        "summary": esc.summary or f"{esc.reason} for {esc.action_type} on {esc.service}",
        "description": how_to_answer(esc),
        "decision_id": esc.decision_id,
        "proposal_id": esc.proposal_id,
        "escalation_id": esc.escalation_id,
        "asked": ", ".join(esc.asked),
    }
    if page.unverified:
        annotations["unverified"] = f"the gate's signature did not verify: {page.unverified}"
    body: dict[str, Any] = {
        "labels": labels(page),
        "annotations": annotations,
        "startsAt": _iso(esc.at),
        "endsAt": _iso(max(ends_at, esc.at)),
    }
    link = console_link(config, esc.decision_id)
    if link:
        annotations["console"] = link
        body["generatorURL"] = link
    return body


def trigger(page: Page, config: PagerConfig) -> PagerDutyEvent:
    """PagerDuty's trigger event for ``page`` (dedup key: the escalation id)."""
    esc = page.escalation
    summary = f"[{page.target}] {esc.summary or esc.reason}"
    link = console_link(config, esc.decision_id)
    return PagerDutyEvent(
        action="trigger",
        dedup_key=page.dedup_key,
        target=page.target,
        summary=summary[:PD_SUMMARY_MAX],
        source=esc.service,
        severity=SEVERITIES[esc.reason],
        payload={
            "timestamp": _iso(esc.at),
            "component": esc.service,
            "group": page.target,
            "class": esc.reason,
        },
        custom_details={
            "decision_id": esc.decision_id,
            "proposal_id": esc.proposal_id,
            "escalation_id": esc.escalation_id,
            "escalation_number": esc.escalation_number,
            "escalation_target": page.target,
            "level": labels(page)["level"],
            "pattern": esc.pattern,
            "action_type": esc.action_type,
            "asked": list(esc.asked),
            "how_to_answer": how_to_answer(esc),
            **({"unverified": page.unverified} if page.unverified else {}),
        },
        links=({"href": link, "text": "Escalation Gate console"},) if link else (),
    )


# ------------------------------------------------------------------ handlers


def on_escalation(
    book: Book,
    escalation: OncallEscalation,
    now: dt.datetime,
    config: PagerConfig,
    *,
    partition: int = 0,
    unverified: str = "",
) -> Outcome:
    """Open a page: post its alert and trigger its incident.

    A redelivered escalation posts and triggers again (both are idempotent: the same
    labels are the same alert, the same dedup key the same incident) but is held
    once. An escalation of a decision already resolved after it was raised pages
    nobody.
    """
    resolved_at = book.resolved.get(escalation.decision_id)
    if resolved_at is not None and escalation.at <= resolved_at:
        return Outcome(book, note=f"{escalation.decision_id} was already answered")
    page = Page(escalation, escalation.target or config.default_target, partition, unverified)
    held = book.open.get(escalation.decision_id, ())
    if all(p.dedup_key != page.dedup_key for p in held):
        held = (*held, page)
    ends = min(now + config.ttl, page.expires_at(config))
    effects: tuple[Effect, ...] = (PostAlerts((alert(page, ends, config),), "open"),)
    effects += (trigger(page, config),)
    return Outcome(replace(book, open={**book.open, escalation.decision_id: held}), effects)


def on_resolution(
    book: Book, resolution: OncallResolution, now: dt.datetime, config: PagerConfig
) -> Outcome:
    """Close every page of the decision: each alert ends now, each incident resolves.

    Incidents are resolved by the dedup keys the gate's escalation ids imply
    (``DECISION_ID:timeout:N`` for N up to ``escalations``) as well as by the pages
    held, so a pager that never saw an escalation (it was down, or its book was
    rebuilt without it) still resolves its incident. Resolving twice is harmless.
    """
    held = book.open.get(resolution.decision_id, ())
    ended = max(now, resolution.at)
    alerts = tuple(alert(page, ended, config) for page in held)
    keys = {page.dedup_key: page.target for page in held}
    for number in range(1, resolution.escalations + 1):
        keys.setdefault(f"{resolution.decision_id}:timeout:{number}", config.default_target)
    effects: tuple[Effect, ...] = (PostAlerts(alerts, "resolve"),) if alerts else ()
    effects += tuple(
        PagerDutyEvent(action="resolve", dedup_key=key, target=target)
        for key, target in keys.items()
    )
    remaining = {k: v for k, v in book.open.items() if k != resolution.decision_id}
    resolved = {**_recent(book.resolved, now, config), resolution.decision_id: resolution.at}
    return Outcome(Book(remaining, resolved), effects)


def keepalive(book: Book, now: dt.datetime, config: PagerConfig) -> Outcome:
    """Re-post every open alert with ``endsAt`` ahead again; forget expired pages.

    An expired page (a failed verification past its hold, an approval nobody can
    answer any more) is not re-posted: its last ``endsAt`` passes and Alertmanager
    resolves it. Its PagerDuty incident stays until a human resolves it there.
    """
    kept: dict[str, tuple[Page, ...]] = {}
    alerts: list[dict[str, Any]] = []
    for decision_id, pages in book.open.items():
        alive = tuple(page for page in pages if now < page.expires_at(config))
        if alive:
            kept[decision_id] = alive
        alerts += [
            alert(page, min(now + config.ttl, page.expires_at(config)), config) for page in alive
        ]
    effects: tuple[Effect, ...] = (PostAlerts(tuple(alerts), "keepalive"),) if alerts else ()
    return Outcome(Book(kept, _recent(book.resolved, now, config)), effects)


def revoke(book: Book, partitions: set[int]) -> Book:
    """The book without the pages of partitions this pager no longer owns."""
    kept = {
        decision_id: tuple(p for p in pages if p.partition not in partitions)
        for decision_id, pages in book.open.items()
    }
    return Book({k: v for k, v in kept.items() if v}, book.resolved)


def _recent(
    resolved: dict[str, dt.datetime], now: dt.datetime, config: PagerConfig
) -> dict[str, dt.datetime]:
    """Resolved decisions worth remembering: as long as an escalation could still arrive."""
    horizon = now - config.max_open
    return {k: at for k, at in resolved.items() if at >= horizon}


def read_record(raw: bytes | dict[str, Any]) -> OncallEscalation | OncallResolution:
    """Decode one ``oncall`` record: a resolution by its ``type``, else an escalation.

    The gate's ``signature`` (checked by the service, ``streams/keys.py``) is not part
    of the record. Raises ``InputError`` naming the field.
    """
    data = parse_json(raw) if isinstance(raw, bytes) else raw
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key != "signature"}
    if isinstance(data, dict) and data.get("type") == "resolved":
        return validate(OncallResolution, data)
    return validate(OncallEscalation, data)
