"""``escalation keys``: make and show Ed25519 keys (all through streams/keys.py).

``keys new --gate`` / ``keys new --executor`` write a private key (0600, never over
an existing one) and its ``.pub``; ``keys show --gate`` prints every public key of
the gate a verifier accepts (current and retired), with its key id.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from streams import keys as keys_module
from streams.errors import KeyFileError
from streams.settings import Settings

USAGE_ERROR = 2


def _fail(message: str) -> NoReturn:
    click.echo(f"escalation keys: error: {message}", err=True)
    sys.exit(USAGE_ERROR)


def _settings() -> Settings:
    from streams.kafka.cli import current_settings  # noqa: PLC0415

    return current_settings()


def _role(gate: bool, executor: bool, person: str | None = None) -> str:
    if int(gate) + int(executor) + int(person is not None) != 1:
        _fail("--as NAME, --gate or --executor: give exactly one")
    return "gate" if gate else "executor" if executor else "person"


@click.group("keys")
def keys() -> None:
    """Ed25519 signing keys of the gate and of executors."""


@keys.command("new")
@click.option("--as", "person", default=None, help="A person's key (signs answers, commands).")
@click.option("--gate", is_flag=True, help="The gate's key (signs decisions, commands, pages).")
@click.option("--executor", is_flag=True, help="An executor's key (signs its outcomes).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Private key file (default: ESCALATION_GATE_KEY_FILE / ESCALATION_EXECUTOR_KEY_FILE, "
    "else DATA_DIR/keys/ROLE.key).",
)
def new(person: str | None, gate: bool, executor: bool, out: Path | None) -> None:
    """Write a new private key (mode 0600, never over another) and its .pub; print its id.

    With ``--as NAME`` the key is NAME's (KEY_DIR/NAME.key), and the entry to add to
    the keyring is printed; the keyring is reviewed before it lists the key.
    """
    role = _role(gate, executor, person)
    settings = _settings()
    if person is not None:
        from streams.identities import person_key_path  # noqa: PLC0415

        path = out or person_key_path(settings, person)
        signer = keys_module.generate(person)
        try:
            keys_module.write_private(signer, path)
        except KeyFileError as exc:
            _fail(str(exc))
        click.echo(f"key_id={signer.key_id}")
        click.echo(f"private={path}", err=True)
        click.echo("# add to the keyring's people (and have it reviewed):")
        pem = "\n".join(
            f"      {line}" for line in keys_module.public_pem(signer.public).splitlines()
        )
        click.echo(
            f"  - name: {person}\n    roles: [approve, reject, abort]\n    public_key: |\n{pem}"
        )
        return
    configured = settings.gate_key_file if role == "gate" else settings.executor_key_file
    path = out or configured or keys_module.dev_key(settings, role)
    signer = keys_module.generate(f"escalation-{role}")
    try:
        public = keys_module.write_private(signer, path)
    except KeyFileError as exc:
        _fail(str(exc))
    click.echo(f"key_id={signer.key_id}")
    click.echo(f"private={path}", err=True)
    click.echo(f"public={public}", err=True)


@keys.command("show")
@click.option("--gate", is_flag=True, help="Every public key of the gate verifiers accept.")
@click.option("--executor", is_flag=True, help="The executor's public key.")
def show(gate: bool, executor: bool) -> None:
    """Print public keys as PEM, each after a '# key_id=...' line."""
    role = _role(gate, executor)
    settings = _settings()
    try:
        if role == "gate":
            public_keys = keys_module.gate_public_keys(settings)
            found = [(kid, public_keys.get(kid)) for kid in public_keys.ids()]
        else:
            signer = keys_module.executor_signer(settings)
            found = [(signer.key_id, signer.public)]
    except KeyFileError as exc:
        _fail(str(exc))
    for kid, public in found:
        if public is None:  # pragma: no cover - ids() lists only keys it holds
            continue
        click.echo(f"# key_id={kid}")
        click.echo(keys_module.public_pem(public), nl=False)
