"""Kafka client security settings: one source, three client libraries.

Every command of ours reads the security of its Kafka clients the way Kafka tools
do: librdkafka property names (``security.protocol``, ``sasl.mechanism``,
``sasl.username``, ``sasl.password``, ``ssl.ca.location``, ...) from a client
properties file (``ESCALATION_KAFKA_CLIENT_PROPERTIES``, the file ``kafka-*.sh
--command-config`` takes) and from the environment (``KAFKA_SECURITY_PROTOCOL``,
``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``,
``KAFKA_SSL_CA_LOCATION``), the environment winning. Nothing set: plaintext.

- ``client_properties(settings)``: the merged librdkafka properties (strings).
- ``confluent_config(settings)``: the same for a confluent-kafka client (merge it
  into a Producer/Consumer/AdminClient config).
- ``aiokafka_config(settings)``: keyword arguments of ``AIOKafkaProducer`` /
  ``AIOKafkaConsumer`` / ``AIOKafkaAdminClient``.
- ``faust_credentials(settings)``: ``broker_credentials`` of a Faust ``App``.

``write_client_properties`` writes such a file (mode 0600, never over another) for
the principals the local secure broker creates.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import EscalationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from streams.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# Properties a client file may carry that are about security (anything else in the
# file, bootstrap.servers say, is left to the caller's own settings).
SECURITY_KEYS = (
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
)


class KafkaSecurityError(EscalationError, ValueError):
    """The Kafka client security settings are incomplete, contradictory or unreadable."""


def parse_client_properties(text: str, *, source: str = "properties") -> dict[str, str]:
    """``key=value`` (or ``key: value``) lines, ``#``/``!`` comments, as Java reads them."""
    parsed: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        separator = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if separator <= 0:
            msg = f"{source}:{number}: expected key=value, got {line[:60]!r}"
            raise KafkaSecurityError(msg)
        parsed[line[:separator].strip()] = line[separator + 1 :].strip()
    return parsed


def read_client_properties(path: Path) -> dict[str, str]:
    """The properties of a client file; ``KafkaSecurityError`` naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"ESCALATION_KAFKA_CLIENT_PROPERTIES: cannot read {path} ({exc.strerror})"
        raise KafkaSecurityError(msg) from None
    return parse_client_properties(text, source=str(path))


def write_client_properties(path: Path, properties: Mapping[str, str]) -> Path:
    """Write a client properties file readable by its owner only; never over another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{key}={value}\n" for key, value in properties.items())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        msg = f"{path}: a credentials file already exists there; refusing to overwrite it"
        raise KafkaSecurityError(msg) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def client_properties(settings: Settings) -> dict[str, str]:
    """The librdkafka security properties: the file's, then the environment's on top.

    Checked: a known protocol, a known mechanism, and a username and password
    whenever the protocol is SASL. Empty for a plaintext cluster.
    """
    merged: dict[str, str] = {}
    if settings.kafka_client_properties is not None:
        found = read_client_properties(settings.kafka_client_properties)
        merged.update({k: v for k, v in found.items() if k in SECURITY_KEYS})
        if "sasl.mechanisms" in merged:  # librdkafka's older spelling
            merged.setdefault("sasl.mechanism", merged.pop("sasl.mechanisms"))
    overrides: dict[str, str | None] = {
        "security.protocol": settings.kafka_security_protocol,
        "sasl.mechanism": settings.kafka_sasl_mechanism,
        "sasl.username": settings.kafka_sasl_username,
        "sasl.password": (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password is not None
            else None
        ),
        "ssl.ca.location": (
            str(settings.kafka_ssl_ca_location) if settings.kafka_ssl_ca_location else None
        ),
    }
    merged.update({k: v for k, v in overrides.items() if v})
    _check(merged)
    return merged


def _check(props: Mapping[str, str]) -> None:
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        msg = f"security.protocol: must be one of {', '.join(PROTOCOLS)}, got {protocol!r}"
        raise KafkaSecurityError(msg)
    if protocol.startswith("SASL"):
        mechanism = props.get("sasl.mechanism", "")
        if mechanism.upper() not in MECHANISMS:
            msg = (
                f"sasl.mechanism: {protocol} needs one of {', '.join(MECHANISMS)}, "
                f"got {mechanism!r}"
            )
            raise KafkaSecurityError(msg)
        for key in ("sasl.username", "sasl.password"):
            if not props.get(key):
                msg = f"{key}: {protocol} needs it (KAFKA_{key.upper().replace('.', '_')})"
                raise KafkaSecurityError(msg)
    elif any(key.startswith("sasl.") for key in props):
        msg = f"security.protocol: sasl.* settings given but the protocol is {protocol}"
        raise KafkaSecurityError(msg)


def confluent_config(settings: Settings) -> dict[str, Any]:
    """Security properties for a confluent-kafka (librdkafka) client config."""
    return dict(client_properties(settings))


def principal(settings: Settings) -> str | None:
    """The SASL user these settings authenticate as, if any."""
    return client_properties(settings).get("sasl.username")


def _ssl_context(props: Mapping[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=props.get("ssl.ca.location"))
    if props.get("ssl.certificate.location"):
        context.load_cert_chain(
            props["ssl.certificate.location"],
            props.get("ssl.key.location"),
            props.get("ssl.key.password"),
        )
    if props.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
        context.check_hostname = False
    return context


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of aiokafka clients for the same security settings."""
    props = client_properties(settings)
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    config: dict[str, Any] = {}
    if protocol == "PLAINTEXT":
        return config
    config["security_protocol"] = protocol
    if protocol in {"SSL", "SASL_SSL"}:
        config["ssl_context"] = _ssl_context(props)
    if protocol.startswith("SASL"):
        config["sasl_mechanism"] = props["sasl.mechanism"].upper()
        config["sasl_plain_username"] = props["sasl.username"]
        config["sasl_plain_password"] = props["sasl.password"]
    return config


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for a Faust App (None for a plaintext cluster)."""
    import faust  # noqa: PLC0415 - only the worker imports faust

    props = client_properties(settings)
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(_ssl_context(props))
    return faust.SASLCredentials(
        username=props["sasl.username"],
        password=props["sasl.password"],
        mechanism=props["sasl.mechanism"].upper(),
        ssl_context=_ssl_context(props) if protocol == "SASL_SSL" else None,
    )
