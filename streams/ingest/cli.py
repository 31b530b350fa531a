"""``escalation ingest``: HolmesGPT's responses from a file, and the HTTP intake."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import click
import orjson

from streams.errors import InputError


def _settings(ctx: click.Context) -> Any:
    from streams.cli import settings_from  # noqa: PLC0415

    return settings_from(ctx)


def _bootstrap(ctx: click.Context) -> str:
    from streams.kafka.cli import cluster_bootstrap  # noqa: PLC0415

    return cluster_bootstrap(_settings(ctx))


@click.group()
def ingest() -> None:
    """Proposals from real proposers: HolmesGPT responses and the HTTP intake."""


@ingest.command("holmesgpt")
@click.argument("source", metavar="FILE|-")
@click.option("--dry-run", is_flag=True, help="Print the proposals (JSON lines); publish nothing.")
@click.pass_context
def ingest_holmesgpt(ctx: click.Context, source: str, dry_run: bool) -> None:
    """Map a HolmesGPT response (investigation or chat with pending approvals) to proposals.

    What cannot be mapped is one line naming the field (exit 2), and the original
    bytes go to the dead-letter topic (not with --dry-run).
    """
    from streams.files import read_bytes, shown_path  # noqa: PLC0415
    from streams.ingest.holmesgpt import map_holmesgpt  # noqa: PLC0415
    from streams.ingest.letters import dead_letter  # noqa: PLC0415
    from streams.models import encode  # noqa: PLC0415

    raw = read_bytes(source, what="input")
    name = "stdin" if source == "-" else shown_path(source)
    now = dt.datetime.now(tz=dt.UTC)
    settings = _settings(ctx)
    try:
        proposals = map_holmesgpt(raw, now=now)
    except InputError as exc:
        if not dry_run:
            from streams.cli import _produce  # noqa: PLC0415

            letter = dead_letter(raw, exc, where=f"file:{name}", at=now)
            _produce(_bootstrap(ctx), settings.topic("dlq"), [(b"", encode(letter))])
        where = f"{name}: {exc.field}" if exc.field else name
        raise InputError(where, exc.reason, kind=exc.kind) from None
    if dry_run:
        for proposal in proposals:
            click.echo(encode(proposal).decode())
        return
    from streams.cli import _produce  # noqa: PLC0415

    topic = settings.topic("proposals")
    _produce(
        _bootstrap(ctx),
        topic,
        [(p.action.target.service.encode(), encode(p)) for p in proposals],
    )
    ids = ", ".join(p.proposal_id for p in proposals)
    click.echo(f"published {len(proposals)} proposal(s) to {topic}: {ids}")


@ingest.command("token")
@click.option("--as", "ai_system", required=True, help="The AI system the token publishes as.")
def ingest_token(ai_system: str) -> None:
    """Make a bearer token: the token for the AI system, the hash for the clients file."""
    from streams.ingest.clients import new_token  # noqa: PLC0415

    token, digest = new_token()
    click.echo(f"token (give to {ai_system}, shown once): {token}")
    click.echo("clients file entry:")
    click.echo(f"  - ai_system: {orjson.dumps(ai_system).decode()}")
    click.echo(f"    token_sha256: [{digest}]")


@ingest.command("serve")
@click.option("--host", default=None, help="Bind address.  [env: ESCALATION_INGEST_ADDR]")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="[env: ESCALATION_INGEST_PORT]"
)
@click.option(
    "--clients",
    "clients_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Reviewed clients file (token hashes).  [env: ESCALATION_INGEST_CLIENTS_FILE]",
)
@click.pass_context
def ingest_serve(
    ctx: click.Context, host: str | None, port: int | None, clients_file: str | None
) -> None:
    """Serve POST /v1/proposals and POST /v1/holmesgpt (202 once the broker has them)."""
    import uvicorn  # noqa: PLC0415

    from streams.files import read_bytes  # noqa: PLC0415
    from streams.ingest.app import create_app  # noqa: PLC0415
    from streams.ingest.clients import Clients  # noqa: PLC0415
    from streams.ingest.publisher import Publisher  # noqa: PLC0415
    from streams.kafka.security import confluent_config  # noqa: PLC0415

    settings = _settings(ctx)
    path = clients_file or settings.ingest_clients_file
    if path is None:
        raise InputError(
            "--clients", "required (or ESCALATION_INGEST_CLIENTS_FILE): who may publish"
        )
    clients = Clients.parse(read_bytes(path, what="clients file"), source=str(path))
    # The intake writes proposals as its own principal (client security settings).
    publisher = Publisher(_bootstrap(ctx), **confluent_config(settings))
    app = create_app(
        clients=clients,
        publisher=publisher,
        proposals_topic=settings.topic("proposals"),
        dlq_topic=settings.topic("dlq"),
        max_body_bytes=settings.max_message_bytes,
    )
    tls: dict[str, Any] = {}
    if settings.ingest_tls_cert_file is not None:
        tls = {
            "ssl_certfile": str(settings.ingest_tls_cert_file),
            "ssl_keyfile": str(settings.ingest_tls_key_file or settings.ingest_tls_cert_file),
        }
    # The socket is bound here, so port 0 works and the bound port can be told.
    sock = socket.create_server(
        (host or settings.ingest_addr, settings.ingest_port if port is None else port)
    )
    bound = sock.getsockname()[1]
    if settings.ingest_port_file is not None:
        settings.ingest_port_file.write_text(f"{bound}\n")
    click.echo(f"intake listening on {sock.getsockname()[0]}:{bound}", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **tls))
    try:
        server.run(sockets=[sock])
    finally:
        publisher.close()
