"""The pager's two HTTP targets: Alertmanager's v2 API and PagerDuty's Events API v2.

Alertmanager through ``httpx2`` (the maintained successor of httpx, which PagerDuty's
own client is built on); PagerDuty through its vendor client, ``pagerduty``'s
``EventsApiV2Client``. Each call either returns or raises :class:`DeliveryError`,
which says whether trying again can help (a network error, a 5xx or a 429) or not
(any other 4xx: the target refused the request as invalid).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import httpx2
import pagerduty

from streams.errors import EscalationError
from streams.oncall.pages import PagerDutyEvent

TIMEOUT_SECONDS = 10
log = logging.getLogger(__name__)


class DeliveryError(EscalationError, RuntimeError):
    """A target did not take a page; ``transient`` when trying again may help."""

    def __init__(self, system: str, message: str, *, transient: bool) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system
        self.transient = transient


def _transient(status: int) -> bool:
    return status == 429 or status >= 500


def _verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    # A private CA (a TLS-inspecting proxy, or the test stand-in); otherwise the system store.
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else True


class Alertmanager:
    """``POST /api/v2/alerts`` and ``GET /api/v2/alerts`` of one Alertmanager."""

    system = "alertmanager"

    def __init__(self, url: str, *, ca_file: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = httpx2.Client(
            base_url=self.url, timeout=TIMEOUT_SECONDS, verify=_verify(ca_file)
        )

    def post(self, alerts: list[dict[str, Any]]) -> None:
        """Create, refresh or resolve ``alerts`` (an alert is named by its labels)."""
        try:
            response = self._client.post("/api/v2/alerts", json=alerts)
        except httpx2.HTTPError as exc:
            raise DeliveryError(self.system, f"{self.url}: {exc}", transient=True) from exc
        if not response.is_success:
            raise DeliveryError(
                self.system,
                f"POST /api/v2/alerts answered {response.status_code}: {response.text[:300]}",
                transient=_transient(response.status_code),
            )

    def alerts(self, **filters: str | bool) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the alerts Alertmanager shows (its query filters)."""
        params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in filters.items()}
        try:
            response = self._client.get("/api/v2/alerts", params=params)
            response.raise_for_status()
        except httpx2.HTTPError as exc:
            raise DeliveryError(self.system, f"{self.url}: {exc}", transient=True) from exc
        body = response.json()
        if not isinstance(body, list):
            raise DeliveryError(self.system, "GET /api/v2/alerts: not a list", transient=True)
        return body

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


class Alertmanagers:
    """Every Alertmanager of an HA cluster (they share silences and notifications by
    gossip, not alerts, so each is sent every alert, as Prometheus does).

    A post is delivered when one of them took it (its notification can go out); the
    others get it again with the next keep-alive. It fails only when every one did.
    """

    system = "alertmanager"

    def __init__(self, members: list[Alertmanager]) -> None:
        if not members:
            msg = "at least one Alertmanager is needed"
            raise ValueError(msg)
        self.members = members

    @classmethod
    def from_urls(cls, urls: str) -> Alertmanagers:
        """From a comma-separated list of URLs."""
        return cls([Alertmanager(url.strip()) for url in urls.split(",") if url.strip()])

    def post(self, alerts: list[dict[str, Any]]) -> None:
        """Post to each; ``DeliveryError`` only when none took it (transient if any may)."""
        errors: list[DeliveryError] = []
        for member in self.members:
            try:
                member.post(alerts)
            except DeliveryError as exc:
                errors.append(exc)
                log.warning("%s", exc)
        if len(errors) == len(self.members):
            raise DeliveryError(
                self.system,
                "; ".join(str(e).removeprefix("alertmanager: ") for e in errors),
                transient=any(e.transient for e in errors),
            )

    def close(self) -> None:
        """Close every member's connection pool."""
        for member in self.members:
            member.close()


class PagerDuty:
    """PagerDuty's Events API v2: one vendor client per routing key.

    ``routing_keys`` maps an on-call target of the policy chain to the routing key
    of the PagerDuty service that pages it; a target without one uses
    ``default_key``.
    """

    system = "pagerduty"

    def __init__(
        self,
        default_key: str | None,
        routing_keys: dict[str, str] | None = None,
        *,
        url: str = "https://events.pagerduty.com",
        ca_file: Path | None = None,
    ) -> None:
        self.default_key = default_key
        self.routing_keys = dict(routing_keys or {})
        self.url = url
        self._verify = _verify(ca_file)
        self._clients: dict[str, pagerduty.EventsApiV2Client] = {}

    def _client(self, target: str) -> pagerduty.EventsApiV2Client | None:
        key = self.routing_keys.get(target) or self.default_key
        if not key:
            return None
        if key not in self._clients:
            try:
                client = pagerduty.EventsApiV2Client(key, base_url=self.url, verify=self._verify)
            except pagerduty.UrlError as exc:
                raise DeliveryError(self.system, str(exc), transient=False) from exc
            client.timeout = TIMEOUT_SECONDS
            # The pager tries again itself, with its own backoff, keeping Alertmanager's
            # alerts alive meanwhile: the client's own retries sleep for minutes (and
            # a 429 forever) inside one call.
            client.retry = dict.fromkeys((429, 500, 502, 503, 504), 0)
            client.max_network_attempts = 0
            self._clients[key] = client
        return self._clients[key]

    def send(self, event: PagerDutyEvent) -> str | None:
        """Send ``event``; PagerDuty's dedup key, or ``None`` when no key routes it."""
        client = self._client(event.target)
        if client is None:
            return None
        try:
            if event.action == "trigger":
                return client.trigger(
                    event.summary,
                    event.source,
                    dedup_key=event.dedup_key,
                    severity=event.severity,
                    payload=dict(event.payload),
                    custom_details=dict(event.custom_details),
                    links=[dict(link) for link in event.links] or None,
                )
            return client.resolve(event.dedup_key)
        except pagerduty.HttpError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            raise DeliveryError(
                self.system,
                f"{event.action} {event.dedup_key}: {exc}",
                transient=_transient(status),
            ) from exc
        except pagerduty.Error as exc:  # network errors after the client's own retries
            raise DeliveryError(
                self.system, f"{event.action} {event.dedup_key}: {exc}", transient=True
            ) from exc

    def close(self) -> None:
        """Close every client's connection pool."""
        for client in self._clients.values():
            client.close()
