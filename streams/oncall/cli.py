"""``escalation pager``: run the pager service (docs/oncall.md)."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from typing import Any

import click

from streams import keys
from streams.keys import PublicKeys
from streams.oncall.pages import PagerConfig
from streams.settings import Settings

log = logging.getLogger(__name__)


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else Settings()


def pager_config(settings: Settings) -> PagerConfig:
    """The pure rules' view of the settings."""
    return PagerConfig(
        default_target=settings.pager_default_target,
        console_url=settings.console_url,
        repost=dt.timedelta(seconds=settings.pager_repost_seconds),
        max_open=dt.timedelta(seconds=settings.pager_max_open_seconds),
        event_hold=dt.timedelta(seconds=settings.pager_event_hold_seconds),
    )


def gate_keys(settings: Settings) -> PublicKeys | None:
    """The gate's public keys the pager checks resolutions with; ``None`` when none are
    configured (``ESCALATION_GATE_PUBLIC_KEYS``, the ``.pub`` beside
    ``ESCALATION_GATE_KEY_FILE``, or development mode's key under the data directory)."""
    configured = settings.gate_public_keys or settings.gate_key_file
    if configured or (settings.dev and keys.dev_key(settings, "gate").exists()):
        return keys.gate_public_keys(settings)
    return None


def check_targets(settings: Settings) -> list[str]:
    """What the pager will page, one line each; ``click.UsageError`` naming the field."""
    keys = {t: k.get_secret_value() for t, k in settings.pagerduty_routing_keys.items()}
    default_key = (
        settings.pagerduty_routing_key.get_secret_value() if settings.pagerduty_routing_key else ""
    )
    if not settings.alertmanager_url and not default_key and not any(keys.values()):
        msg = (
            "ESCALATION_ALERTMANAGER_URL: not set, and no ESCALATION_PAGERDUTY_ROUTING_KEY(S) "
            "either: the pager would page nobody"
        )
        raise click.UsageError(msg)
    for url in (settings.alertmanager_url or "").split(","):
        if settings.alertmanager_url and not url.strip().startswith(("http://", "https://")):
            msg = f"ESCALATION_ALERTMANAGER_URL: must be http(s) URLs, got {url.strip()!r}"
            raise click.UsageError(msg)
    if (default_key or keys) and not settings.pagerduty_url.startswith("https://"):
        msg = f"ESCALATION_PAGERDUTY_URL: must be an https URL, got {settings.pagerduty_url!r}"
        raise click.UsageError(msg)
    if settings.pagerduty_ca_file and not settings.pagerduty_ca_file.is_file():
        msg = f"ESCALATION_PAGERDUTY_CA_FILE: no such file: {settings.pagerduty_ca_file}"
        raise click.UsageError(msg)
    lines = []
    verifier = gate_keys(settings)
    lines.append(
        "resolutions: checked against the gate's public keys"
        if verifier is not None
        else "resolutions: NOT checked (set ESCALATION_GATE_PUBLIC_KEYS): anyone who can "
        "write to oncall can end pages"
    )
    if settings.alertmanager_url:
        lines.append(f"alertmanager: {settings.alertmanager_url}")
    if default_key or keys:
        routed = ", ".join(sorted(keys)) or "none"
        fallback = "the default key" if default_key else "nothing"
        lines.append(
            f"pagerduty: {settings.pagerduty_url} (own routing keys: {routed}; others: {fallback})"
        )
    return lines


@click.command("pager")
@click.option("--check", is_flag=True, help="Validate the paging settings, print them, exit.")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def pager(ctx: click.Context, check: bool, log_level: str) -> None:
    """Page on-call: read `oncall` (consumer group ESCALATION_PAGER_GROUP) and post each
    escalation to Alertmanager (ESCALATION_ALERTMANAGER_URL) and PagerDuty
    (ESCALATION_PAGERDUTY_ROUTING_KEY); resolve them when the approval is answered."""
    settings = _settings(ctx)
    lines = check_targets(settings)
    if check:
        for line in lines:
            click.echo(line)
        return
    from prometheus_client import start_http_server  # noqa: PLC0415

    from streams.kafka.cli import cluster_bootstrap  # noqa: PLC0415
    from streams.kafka.security import confluent_config  # noqa: PLC0415
    from streams.oncall.metrics import PagerMetrics  # noqa: PLC0415
    from streams.oncall.service import Pager  # noqa: PLC0415
    from streams.oncall.targets import Alertmanagers, PagerDuty  # noqa: PLC0415

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    bootstrap = cluster_bootstrap(settings)
    metrics = PagerMetrics()
    if settings.pager_metrics_port:
        start_http_server(settings.pager_metrics_port, settings.metrics_addr, metrics.registry)
    keys = {t: k.get_secret_value() for t, k in settings.pagerduty_routing_keys.items()}
    default_key = (
        settings.pagerduty_routing_key.get_secret_value()
        if settings.pagerduty_routing_key
        else None
    )
    service = Pager(
        bootstrap=bootstrap,
        topic=settings.topic("oncall"),
        group=settings.pager_group,
        config=pager_config(settings),
        alertmanager=(
            Alertmanagers.from_urls(settings.alertmanager_url)
            if settings.alertmanager_url
            else None
        ),
        pagerduty=(
            PagerDuty(
                default_key, keys, url=settings.pagerduty_url, ca_file=settings.pagerduty_ca_file
            )
            if default_key or keys
            else None
        ),
        metrics=metrics,
        keys=gate_keys(settings),
        # SASL/TLS of a secure cluster (KAFKA_SECURITY_PROTOCOL..., or the client
        # properties file): the pager is an operator tool (group escalation-pager).
        kafka_config=confluent_config(settings),
    )
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for line in lines:
        log.info("pager: %s", line)
    service.run(stop)
