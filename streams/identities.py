"""Who signs: people's keys for the command line, and the keyring the gate checks them by.

A person's private key is ``KEY_DIR/NAME.key`` (``escalation keys new --as NAME``), or
the file ``--key`` / ``ESCALATION_KEY_FILE`` names. In development mode
(``ESCALATION_DEV``) :func:`dev_keyring` makes a key for every person the policy names,
for the machine channels, an executor and an SLO source, under ``DATA_DIR/keys``, and
a keyring listing them: the demo and the tests run signed end to end with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from streams import keys
from streams.errors import KeyFileError
from streams.files import read_keyring
from streams.policy import Policy
from streams.policy.keyring import ROLES, Keyring, keyring_yaml
from streams.settings import Settings

#: What a development keyring lets each kind of person do.
OPERATOR_ROLES = ROLES
ONCALL_ROLES = ("reject", "abort", "freeze")
CHANNELS = ("slack", "console")
CHANNEL_RELAYS = ("approve", "reject", "abort", "freeze")
DEV_EXECUTOR = "dev-executor"
DEV_SLO_SOURCE = "dev-slo"


def person_key(settings: Settings, name: str, key_file: Path | None = None) -> keys.Signer:
    """The private key ``name`` signs with (``KeyFileError`` naming the file if none)."""
    path = key_file or settings.key_file or person_key_path(settings, name)
    if not path.exists():
        msg = (
            f"{path}: no private key for {name!r}; make one with "
            f"`escalation keys new --as {name}` and add its public key to the keyring"
        )
        raise KeyFileError(msg)
    return keys.load_private(path, name=name)


def person_key_path(settings: Settings, name: str) -> Path:
    """Where ``name``'s key lives: KEY_DIR/NAME.key (DATA_DIR/keys/people in dev mode)."""
    base = settings.data_dir / "keys" / "people" if settings.dev else settings.key_dir
    return base / f"{name}.key"


def _key(path: Path, name: str) -> keys.Signer:
    if not path.exists():
        with contextlib.suppress(KeyFileError):  # another process made it first: use it
            keys.write_private(keys.generate(name), path)
    return keys.load_private(path, name=name)


def dev_keyring(settings: Settings, policy: Policy, *, extra: Iterable[str] = ()) -> Path:
    """Make (once) the development keys and keyring; the keyring file's path.

    Approvers get every role; on-call people may reject, abort and freeze; ``extra``
    names more operators with every role.
    """
    path = settings.data_dir / "keyring.yaml"
    approvers = [*policy.approval.approvers, *extra]
    oncall = [n for n in policy.approval.oncall if n not in approvers]
    people = [(n, OPERATOR_ROLES) for n in approvers] + [(n, ONCALL_ROLES) for n in oncall]
    base = settings.data_dir / "keys"
    listed = [
        (name, keys.public_pem(_key(base / "people" / f"{name}.key", name).public), roles)
        for name, roles in people
    ]
    channels = [
        (
            name,
            keys.public_pem(_key(base / "channels" / f"{name}.key", name).public),
            CHANNEL_RELAYS,
        )
        for name in CHANNELS
    ]
    executor = _key(base / f"{DEV_EXECUTOR}.key", DEV_EXECUTOR)
    slo = _key(base / f"{DEV_SLO_SOURCE}.key", DEV_SLO_SOURCE)
    text = keyring_yaml(
        version="dev",
        approved_by=["development mode (ESCALATION_DEV): not for production"],
        reviewed=dt.date(2026, 12, 1),
        people=listed,
        channels=channels,
        executors=[(DEV_EXECUTOR, keys.public_pem(executor.public))],
        slo_sources=[(DEV_SLO_SOURCE, keys.public_pem(slo.public))],
    )
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def keyring_for(settings: Settings, policy: Policy) -> Keyring:
    """The keyring in force: ``ESCALATION_KEYRING_FILE``, or in development mode one made
    for the policy's people; refused (``KeyFileError``) otherwise, and when the policy
    pins another keyring."""
    if settings.keyring_file is not None:
        keyring = read_keyring(settings.keyring_file)
    elif settings.dev:
        keyring = read_keyring(dev_keyring(settings, policy))
    else:
        msg = (
            "ESCALATION_KEYRING_FILE is not set: the gate checks every answer and command "
            "against a reviewed keyring (deploy/keyring.example.yaml), or run in "
            "development mode (ESCALATION_DEV=1) to make one for the policy's people"
        )
        raise KeyFileError(msg)
    if policy.keyring_sha256 is not None and policy.keyring_sha256 != keyring.digest:
        msg = (
            f"the policy pins keyring sha256 {policy.keyring_sha256[:12]}..., but the keyring "
            f"in force is {keyring.digest[:12]}...: load the reviewed keyring or policy"
        )
        raise KeyFileError(msg)
    return keyring


class DevIdentities:
    """Development keys and keyring in one directory (the demo, the bench, the tests):
    the worker, the console and every command line started with :meth:`env` share them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keyring = root / "keyring.yaml"
        self.gate_key = root / "keys" / "gate.key"
        self.people = root / "keys" / "people"

    @classmethod
    def make(
        cls, root: Path, policy: Policy, *, extra: Iterable[str] = ("operator",)
    ) -> DevIdentities:
        """Make (once) the keys of ``policy``'s people, ``extra`` operators, the channels,
        an executor, an SLO source and the gate, and their keyring, under ``root``."""
        dev = Settings(data_dir=root, dev=True, keyring_file=None, gate_key_file=None)
        dev_keyring(dev, policy, extra=extra)
        keys.gate_signer(dev)
        return cls(root)

    def env(self) -> dict[str, str]:
        """The settings that make a worker, a console or a command line use these keys."""
        return {
            "ESCALATION_KEYRING_FILE": str(self.keyring),
            "ESCALATION_GATE_KEY_FILE": str(self.gate_key),
            "ESCALATION_KEY_DIR": str(self.people),
            "ESCALATION_EXECUTOR_KEY_FILE": str(self.root / "keys" / f"{DEV_EXECUTOR}.key"),
            "ESCALATION_SLACK_KEY_FILE": str(self.root / "keys" / "channels" / "slack.key"),
            "ESCALATION_CONSOLE_KEY_FILE": str(self.root / "keys" / "channels" / "console.key"),
        }

    def keyring_digest(self) -> str:
        """The sha256 of the keyring file (what decisions record)."""
        return read_keyring(self.keyring).digest

    def person(self, name: str) -> keys.Signer:
        """A person's key."""
        return keys.load_private(self.people / f"{name}.key", name=name)

    def channel(self, name: str) -> keys.Signer:
        """A machine channel's key (``slack``, ``console``)."""
        return keys.load_private(self.root / "keys" / "channels" / f"{name}.key", name=name)

    def executor(self) -> keys.Signer:
        """The development executor's key."""
        return keys.load_private(self.root / "keys" / f"{DEV_EXECUTOR}.key", name=DEV_EXECUTOR)

    def slo(self) -> keys.Signer:
        """The development SLO source's key."""
        return keys.load_private(self.root / "keys" / f"{DEV_SLO_SOURCE}.key", name=DEV_SLO_SOURCE)
