"""One frozen settings object, built once at start-up and passed down.

Nothing reads the environment at import time: call ``Settings()`` in the entry point.
Every field has an environment variable (``ESCALATION_<NAME>``, except the Kafka
bootstrap servers, which use the conventional ``KAFKA_BOOTSTRAP_SERVERS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_APPROVAL_SECRET = "change-me-approval-channel-secret"  # noqa: S105 - a named placeholder
DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "escalation-policy.yaml"


def _default_policy() -> Path:
    # Installed wheels carry the policy under streams/_policies; a checkout has policies/.
    packaged = Path(__file__).resolve().parent / "_policies" / "escalation-policy.yaml"
    return DEFAULT_POLICY if DEFAULT_POLICY.exists() else packaged


class Settings(BaseSettings):
    """Runtime configuration of the gate and its command line."""

    model_config = SettingsConfigDict(
        env_prefix="ESCALATION_", frozen=True, extra="ignore", populate_by_name=True
    )

    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "ESCALATION_BOOTSTRAP_SERVERS"),
        description="Kafka cluster to use; unset means the local broker (started on demand).",
    )
    topic_prefix: str = Field(default="escalation.", description="Prefix of every topic name.")
    policy_file: Path = Field(default_factory=_default_policy, description="Escalation policy.")
    app_id: str = Field(default="escalation-gate", description="Faust app id / consumer group.")
    data_dir: Path = Field(
        default=Path("var"), description="Worker state (RocksDB tables) and local broker data."
    )
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="Prometheus port.")
    tick_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often approval timeouts are checked."
    )
    linger_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="How long the output producer waits to fill a batch (librdkafka linger.ms).",
    )
    gc_reclaim_seconds: float = Field(
        default=3600.0,
        ge=10,
        le=7 * 24 * 3600,
        description="How often the worker runs one full garbage collection of everything, "
        "frozen state included (streams/topology/collector.py): one longer pause each time.",
    )
    state_snapshot_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the owner of each state partition writes the folded values "
        "that changed to state.folded (a restart reads those instead of every update).",
    )
    stall_seconds: float = Field(
        default=90.0,
        gt=0,
        description="An assigned input partition with input waiting whose committed offset "
        "has not moved for this long stops the worker, to be restarted (a stalled consumer).",
    )
    proposals_reader: Literal["lanes", "faust"] = Field(
        default="lanes",
        description="How proposals are read: 'lanes' (librdkafka reads ahead; each service's "
        "proposals wait in a lane of their own, decided in turn, so a storm on a few services "
        "does not hold up the rest: streams/topology/lanes.py) or 'faust' (one Faust agent, "
        "in partition order; kept for comparison: bench/storm.py).",
    )
    metrics_addr: str = Field(default="127.0.0.1", description="Prometheus bind address.")
    metrics_port_file: Path | None = Field(
        default=None, description="Write the bound metrics port here (for port 0)."
    )
    partitions: int = Field(default=4, ge=1, le=1024, description="Partitions of input topics.")
    replication_factor: int = Field(default=1, ge=1, le=16, description="Topic replication.")
    max_message_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Larger input goes to the dead-letter topic."
    )
    approval_secret: SecretStr = Field(
        default=SecretStr(DEFAULT_APPROVAL_SECRET),
        description="HMAC-SHA256 secret of the approval channel.",
    )
    dev: bool = Field(
        default=False,
        description="Development mode: keys missing from the settings are made under "
        "DATA_DIR/keys instead of refusing to start. Never in production.",
    )
    keyring_file: Path | None = Field(
        default=None,
        description="The reviewed keyring (people, channels, executors, SLO sources and "
        "their public keys and roles) every signature is checked against.",
    )
    key_dir: Path = Field(
        default=Path.home() / ".config" / "escalation-gate" / "keys",
        description="Where people's private keys live (NAME.key), for --as NAME.",
    )
    key_file: Path | None = Field(
        default=None, description="The private key to sign with (instead of KEY_DIR/NAME.key)."
    )
    instance_id: str | None = Field(
        default=None,
        description="Static group membership (Kafka KIP-345): a stable name per worker "
        "(a StatefulSet pod's). A worker restarted under the same name takes its "
        "partitions back at once instead of after the session timeout.",
    )
    gate_key_file: Path | None = Field(
        default=None,
        description="The gate's Ed25519 private key (PEM, mode 0600): signs decisions, "
        "commands and audit checkpoints.",
    )
    gate_public_keys: tuple[Path, ...] = Field(
        default=(),
        description="Public keys of the gate, current and retired (PEM files, comma-separated "
        "or JSON list), for verifiers; empty means the current key's .pub file.",
    )
    executor_key_file: Path | None = Field(
        default=None,
        description="An executor's Ed25519 private key (PEM, mode 0600): signs its outcomes.",
    )
    kafka_client_properties: Path | None = Field(
        default=None,
        description="A Kafka client properties file (librdkafka names: security.protocol, "
        "sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, ...).",
    )
    kafka_security_protocol: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_SECURITY_PROTOCOL", "ESCALATION_KAFKA_SECURITY_PROTOCOL"
        ),
        description="security.protocol of every Kafka client (overrides the properties file).",
    )
    kafka_sasl_mechanism: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SASL_MECHANISM", "ESCALATION_KAFKA_SASL_MECHANISM"),
        description="sasl.mechanism, e.g. SCRAM-SHA-512.",
    )
    kafka_sasl_username: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SASL_USERNAME", "ESCALATION_KAFKA_SASL_USERNAME"),
        description="sasl.username: the Kafka principal of this process.",
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SASL_PASSWORD", "ESCALATION_KAFKA_SASL_PASSWORD"),
        description="sasl.password of that principal.",
    )
    kafka_ssl_ca_location: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SSL_CA_LOCATION", "ESCALATION_KAFKA_SSL_CA_LOCATION"),
        description="ssl.ca.location: CA certificates that sign the brokers' certificates.",
    )
    audit_host: str = Field(default="escalation-gate", description="HEC envelope host.")
    audit_index: str = Field(default="escalation", description="Splunk index of audit events.")
    audit_checkpoint_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the worker writes a signed checkpoint of the audit chains "
        "it holds (also when partitions are revoked and when it stops).",
    )
    store: str = Field(default="rocksdb://", description="Faust table store (memory:// in tests).")
    kafka_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "escalation-gate" / "kafka",
        description="Where the Apache Kafka jars are fetched to.",
    )
    ingest_addr: str = Field(default="127.0.0.1", description="HTTP intake bind address.")
    ingest_port: int = Field(default=8480, ge=0, le=65535, description="HTTP intake port.")
    ingest_port_file: Path | None = Field(
        default=None, description="Write the intake's bound port here (for port 0)."
    )
    ingest_clients_file: Path | None = Field(
        default=None,
        description="Reviewed YAML of the AI systems allowed to publish over HTTP: the sha256 "
        "of each one's bearer token and its rate limit (docs/proposers.md).",
    )
    ingest_tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate of the intake (unset: plain HTTP)."
    )
    ingest_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of that certificate (0600)."
    )
    console_addr: str = Field(default="127.0.0.1", description="Console bind address.")
    console_port: int = Field(default=8470, ge=0, le=65535, description="Console HTTP port.")
    console_accounts_file: Path | None = Field(
        default=None,
        description="Local console accounts (`escalation console add-user`): one name and "
        "argon2 password hash per line; unset: sign-in only through the proxy.",
    )
    console_key_file: Path | None = Field(
        default=None,
        description="The console's Ed25519 private key (PEM, 0600): signs its answers and "
        "commands, naming the person signed in.",
    )
    console_session_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the console's signed session cookies; unset: a random one per "
        "start (everyone signs in again after a restart).",
    )
    console_trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses of the authenticating proxy whose user header "
        "the console trusts (oauth2-proxy); empty: the header is ignored.",
    )
    console_user_header: str = Field(
        default="X-Forwarded-User",
        description="Header naming the signed-in person, set by the trusted proxy.",
    )
    console_metrics_port: int = Field(
        default=9466, ge=0, le=65535, description="Console metrics port (0: none)."
    )
    console_max_decisions: int = Field(
        default=20_000,
        ge=100,
        description="Decisions the console keeps in memory (oldest "
        "closed ones are forgotten first).",
    )
    slack_bot_token: SecretStr | None = Field(
        default=None, description="The Slack app's bot token (xoxb-...) for `escalation slack`."
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None, description="The Slack app's signing secret (verifies interactivity)."
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack Web API base URL."
    )
    slack_addr: str = Field(default="127.0.0.1", description="Slack interactivity bind address.")
    slack_port: int = Field(default=3000, ge=0, le=65535, description="Slack interactivity port.")
    slack_port_file: Path | None = Field(
        default=None, description="Write the bound Slack interactivity port here (for port 0)."
    )
    slack_users_file: Path = Field(
        default=Path("deploy/slack/users.yaml"),
        description="Reviewed mapping of Slack user ids to keyring people.",
    )
    slack_channels_file: Path = Field(
        default=Path("deploy/slack/channels.yaml"),
        description="Reviewed mapping of services to Slack channels, with a default.",
    )
    slack_key_file: Path | None = Field(
        default=None,
        description="The Slack bridge's Ed25519 private key (PEM, 0600): signs its answers.",
    )
    # ``escalation pager`` (docs/oncall.md): oncall -> Alertmanager and PagerDuty.
    alertmanager_url: str | None = Field(
        default=None,
        description="Alertmanager the pager posts to (http://HOST:9093); unset: not paged.",
    )
    pagerduty_routing_key: SecretStr | None = Field(
        default=None,
        description="PagerDuty Events API v2 routing key of targets without their own; "
        "unset (and no per-target key): PagerDuty is not paged.",
    )
    pagerduty_routing_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Routing key per on-call target of the policy chain, as JSON "
        '({"sre-manager": "KEY"}).',
    )
    pagerduty_url: str = Field(
        default="https://events.pagerduty.com", description="PagerDuty Events API (https)."
    )
    pagerduty_ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) to trust for PagerDuty; unset: the system's."
    )
    pager_group: str = Field(default="escalation-pager", description="The pager's consumer group.")
    pager_repost_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How often open alerts are re-posted; each post ends 4 of these ahead.",
    )
    pager_max_open_seconds: float = Field(
        default=7 * 86_400.0, gt=0, description="An approval page older than this expires."
    )
    pager_event_hold_seconds: float = Field(
        default=3600.0, gt=0, description="How long a failed verification's alert fires."
    )
    pager_default_target: str = Field(
        default="oncall", description="Target of an escalation that names none."
    )
    pager_metrics_port: int = Field(default=9465, ge=0, le=65535, description="Pager metrics.")
    console_url: str | None = Field(
        default=None,
        description="Public URL of the console, linked from every page (CONSOLE/decisions/ID).",
    )

    def topic(self, name: str) -> str:
        """Full topic name for a logical name such as ``proposals``."""
        return f"{self.topic_prefix}{name}"
