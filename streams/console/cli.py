"""``escalation console`` (serve the web console) and ``escalation console add-user``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from streams.console.app import Console
    from streams.settings import Settings


def _settings(ctx: click.Context) -> Settings:
    from streams.cli import settings_from  # noqa: PLC0415

    return settings_from(ctx)


def build_console(settings: Settings, bootstrap: str | None) -> Console:
    """A console on ``bootstrap`` (its feed not started yet), or without Kafka when ``None``."""
    from streams.console.app import Console  # noqa: PLC0415
    from streams.console.auth import AccountsFile, Auth  # noqa: PLC0415
    from streams.console.feed import Feed  # noqa: PLC0415
    from streams.console.publish import Publisher, console_signer  # noqa: PLC0415
    from streams.console.view import ConsoleView  # noqa: PLC0415
    from streams.files import read_policy  # noqa: PLC0415

    auth = Auth.of(
        AccountsFile(settings.console_accounts_file),
        settings.console_trusted_proxies,
        settings.console_user_header,
    )
    console = Console(
        settings=settings,
        view=ConsoleView(max_decisions=settings.console_max_decisions),
        auth=auth,
        policy=read_policy(settings.policy_file),
    )
    if bootstrap is not None:
        console.publisher = Publisher(settings, bootstrap, console_signer(settings))
        console.feed = Feed(settings, bootstrap, console.view, console.lock)
    return console


def serve(console: Console, *, addr: str, port: int, port_file: Path | None = None) -> None:
    """Run the console until interrupted (uvicorn), its feed beside it."""
    import asyncio  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    from streams.console.app import create_app  # noqa: PLC0415

    config = uvicorn.Config(
        create_app(console), host=addr, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    if console.feed is not None:
        console.feed.start()
    if console.settings.console_metrics_port:
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(
            console.settings.console_metrics_port,
            addr=console.settings.metrics_addr,
            registry=console.metrics.registry,
        )

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.05)
        if port_file is not None and server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            port_file.write_text(str(bound))  # noqa: ASYNC240 - once, before serving anyone
        await task

    try:
        asyncio.run(run())
    finally:
        if console.feed is not None:
            console.feed.stop()


@click.group(invoke_without_command=True)
@click.option("--addr", default=None, help="Bind address.  [env: ESCALATION_CONSOLE_ADDR]")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="HTTP port (0 picks a free one).  [env: ESCALATION_CONSOLE_PORT; default: 8470]",
)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the bound port here once listening.",
)
@click.pass_context
def console(ctx: click.Context, addr: str | None, port: int | None, port_file: Path | None) -> None:
    """The operators' web console: what waits for a human, decisions, fleet, trends."""
    if ctx.invoked_subcommand is not None:
        return
    from streams.kafka.cli import cluster_bootstrap  # noqa: PLC0415

    settings = _settings(ctx)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    built = build_console(settings, cluster_bootstrap(settings))
    if not built.auth.accounts.hashes and not built.auth.trusted_proxies:
        click.echo(
            "escalation console: warning: no accounts file and no trusted proxy: nobody can "
            "sign in (see `escalation console add-user`)",
            err=True,
        )
    bind = addr or settings.console_addr
    chosen = settings.console_port if port is None else port
    click.echo(f"escalation console on http://{bind}:{chosen}/ (Ctrl-C stops it)", err=True)
    serve(built, addr=bind, port=chosen, port_file=port_file)


@console.command("add-user")
@click.argument("name")
@click.option(
    "--accounts-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Accounts file.  [env: ESCALATION_CONSOLE_ACCOUNTS_FILE]",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--replace", is_flag=True, help="Change the password of an existing account.")
@click.pass_context
def add_user(
    ctx: click.Context,
    name: str,
    accounts_file: Path | None,
    password_stdin: bool,
    replace: bool,
) -> None:
    """Add a local console account (argon2id-hashed password, file mode 0600)."""
    from streams.console.auth import add_user as add  # noqa: PLC0415
    from streams.errors import InputError  # noqa: PLC0415

    path = accounts_file or _settings(ctx).console_accounts_file
    if path is None:
        raise InputError("--accounts-file", "required (or set ESCALATION_CONSOLE_ACCOUNTS_FILE)")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    add(path, name, password, replace=replace)
    click.echo(f"account {name} written to {path}")
