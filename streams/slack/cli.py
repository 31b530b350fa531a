"""``escalation slack``: run the Slack service, or check its mapping files."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from streams.errors import EscalationError, KeyFileError
from streams.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "slack"
SUBSCRIBED = ("decisions.approve", "decisions.execute", "audit")


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else Settings()


def _secret(value: Any, name: str) -> str:
    if value is None or not value.get_secret_value():
        raise click.UsageError(f"{name} is not set")
    return str(value.get_secret_value())


@click.command("slack")
@click.option("--check", is_flag=True, help="Validate the users and channels files, then exit.")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def slack(ctx: click.Context, check: bool, log_level: str) -> None:
    """Slack approvals: Block Kit messages for Level 2/3 decisions, buttons that answer.

    Needs ESCALATION_SLACK_BOT_TOKEN and ESCALATION_SLACK_SIGNING_SECRET; the
    interactivity endpoint is POST http://ESCALATION_SLACK_ADDR:ESCALATION_SLACK_PORT/slack/events.
    """
    from streams.slack.config import SlackConfigError, read_channels, read_users  # noqa: PLC0415

    settings = _settings(ctx)
    keyring, note = _keyring(settings, required=not check)
    people = None if keyring is None else set(keyring.people)
    try:
        users = read_users(settings.slack_users_file, people=people)
        channels = read_channels(settings.slack_channels_file)
    except SlackConfigError as exc:
        for line in exc.problems:
            click.echo(f"escalation: error: {line}", err=True)
        sys.exit(2)
    if check:
        click.echo(
            f"{settings.slack_users_file}: OK: {len(users.people)} Slack user(s) {note}; "
            f"{settings.slack_channels_file}: OK: {len(channels.services)} service(s), "
            f"default {channels.default}"
        )
        return
    assert keyring is not None  # noqa: S101 - required above
    token = _secret(settings.slack_bot_token, "ESCALATION_SLACK_BOT_TOKEN")
    signing = _secret(settings.slack_signing_secret, "ESCALATION_SLACK_SIGNING_SECRET")
    signer = _signer(settings, keyring)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    _run(settings, users, channels, keyring, signer, token=token, signing_secret=signing)


def _keyring(settings: Settings, *, required: bool) -> tuple[Any, str]:
    """The keyring in force (its people are who users.yaml may name), and a note."""
    from streams.files import read_policy  # noqa: PLC0415
    from streams.identities import keyring_for  # noqa: PLC0415

    try:
        keyring = keyring_for(settings, read_policy(settings.policy_file))
    except KeyFileError:
        if required:
            raise
        return None, "(not checked against a keyring: ESCALATION_KEYRING_FILE is not set)"
    return keyring, f"(all people of keyring {keyring.version})"


def _signer(settings: Settings, keyring: Any) -> Any:
    """The Slack bridge's own key, which must be a channel of the keyring."""
    from streams import keys  # noqa: PLC0415

    if settings.slack_key_file is not None:
        signer = keys.load_private(settings.slack_key_file, name=CHANNEL)
    elif settings.dev:  # the development keyring made it (streams.identities)
        signer = keys.load_private(
            settings.data_dir / "keys" / "channels" / f"{CHANNEL}.key", name=CHANNEL
        )
    else:
        msg = (
            "ESCALATION_SLACK_KEY_FILE is not set: the Slack service signs answers with a key "
            "of its own (`escalation keys new`), listed as a channel of the keyring"
        )
        raise KeyFileError(msg)
    holder = keyring.holder(signer.key_id)
    if holder is None or holder.kind != "channel":
        msg = (
            f"the Slack key (key id {signer.key_id}) is not a channel of the keyring "
            f"{settings.keyring_file or ''}: the gate would refuse every answer it signs"
        )
        raise KeyFileError(msg)
    return signer


def _run(
    settings: Settings,
    users: Any,
    channels: Any,
    keyring: Any,
    signer: Any,
    *,
    token: str,
    signing_secret: str,
) -> None:
    from confluent_kafka import Consumer, Producer  # noqa: PLC0415
    from slack_sdk import WebClient  # noqa: PLC0415
    from slack_sdk.http_retry.builtin_handlers import (  # noqa: PLC0415
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
    )

    from streams.kafka.admin import producer_config  # noqa: PLC0415
    from streams.kafka.cli import cluster_bootstrap  # noqa: PLC0415
    from streams.kafka.security import confluent_config  # noqa: PLC0415
    from streams.slack.answers import KeyringRoles  # noqa: PLC0415
    from streams.slack.metrics import SlackMetrics  # noqa: PLC0415
    from streams.slack.service import Publisher, SlackService, consume, http_server  # noqa: PLC0415
    from streams.slack.store import Store  # noqa: PLC0415

    bootstrap = cluster_bootstrap(settings)
    client = WebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )
    producer = Producer(
        producer_config(bootstrap, **{"linger.ms": 0}, **confluent_config(settings))
    )

    def produce(topic: str, key: bytes, value: bytes) -> None:
        failures: list[Any] = []
        producer.produce(
            topic, value=value, key=key, on_delivery=lambda err, _m: failures.append(err)
        )
        if producer.flush(10) or not failures or failures[0] is not None:
            msg = f"not delivered to {topic}: {failures[0] if failures else 'timeout'}"
            raise EscalationError(msg)

    store = Store(settings.data_dir / "slack" / "slack.sqlite3")
    metrics = SlackMetrics()
    topics = {settings.topic(name): name for name in SUBSCRIBED}
    service = SlackService(
        client=client,
        signing_secret=signing_secret,
        signer=signer,
        users=users,
        channels=channels,
        roles=KeyringRoles.of(keyring.people, relays=keyring.holder(signer.key_id).roles),
        store=store,
        publisher=Publisher(produce, settings.topic("approvals")),
        topics=topics,
        metrics=metrics,
        users_source=str(settings.slack_users_file),
    )
    server = http_server(service, settings.slack_addr, settings.slack_port)
    port = server.server_address[1]
    if settings.slack_port_file is not None:
        Path(settings.slack_port_file).write_text(str(port))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{settings.topic_prefix}escalation-slack",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **confluent_config(settings),
        }
    )
    stop = threading.Event()
    notifier = threading.Thread(
        target=consume,
        args=(service, consumer, list(topics), stop),
        kwargs={"tick_seconds": settings.tick_seconds},
        name="slack-notifier",
        daemon=True,
    )

    def shutdown(*_args: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    notifier.start()
    log.info("slack: interactivity on http://%s:%d/slack/events", settings.slack_addr, port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        notifier.join(timeout=10)
        consumer.close()
        producer.flush(10)
        store.close()
