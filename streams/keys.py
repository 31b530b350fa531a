"""Ed25519 keys, key ids and signatures: the one module that signs and verifies.

Every signed message carries ``signature = {"alg": "ed25519", "key_id": ..., "sig": ...}``.
The signed bytes are the canonical JSON (streams/models/codec.py) of the message
without its ``signature`` field, so a record re-encoded by another client still
verifies. A key id is the first 16 hex digits of the SHA-256 of the raw public key:
rotation is a list of public keys by id, never a code change.

Private keys are PEM files readable by their owner only (0600); loading one that
others may read is refused. Settings hold paths, not key bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streams.errors import KeyFileError

if TYPE_CHECKING:
    from streams.settings import Settings
from streams.models.codec import canonical_json

ALG = "ed25519"

#: Why a signature was refused (audit reasons and metric labels).
Refusal = Literal["unsigned", "malformed_signature", "unknown_key", "bad_signature"]


def key_id(public: Ed25519PublicKey) -> str:
    """The id of a public key: 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    """A public key as PEM text (SubjectPublicKeyInfo)."""
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def parse_public(pem: str | bytes, *, source: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text; ``KeyFileError`` naming ``source`` otherwise."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{source}: not a PEM public key ({exc})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{source}: not an Ed25519 key")
    return public


@dataclass(frozen=True, slots=True)
class Signer:
    """A private key with its id and the name of who holds it."""

    private: Ed25519PrivateKey
    key_id: str
    name: str = ""

    @property
    def public(self) -> Ed25519PublicKey:
        """The matching public key."""
        return self.private.public_key()

    def sign_bytes(self, data: bytes) -> str:
        """The base64 signature of ``data``."""
        return base64.b64encode(self.private.sign(data)).decode()

    def sign(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``body`` with its ``signature`` over the canonical JSON of everything else."""
        unsigned = {k: v for k, v in body.items() if k != "signature"}
        return {**unsigned, "signature": self._signature(canonical_json(unsigned))}

    def _signature(self, canonical: bytes) -> dict[str, str]:
        """The ``signature`` object over ``canonical``."""
        return {"alg": ALG, "key_id": self.key_id, "sig": self.sign_bytes(canonical)}

    def signed_record(self, canonical: bytes) -> bytes:
        """The JSON record of a body with its signature, from the body's canonical JSON
        (``canonical_json`` of an object without ``signature``): what ``sign`` returns,
        serialised, without serialising the body a second time. The keys keep the
        canonical order, ``signature`` last; verifiers re-canonicalise (``verify``)."""
        if canonical[:1] != b"{" or canonical[-1:] != b"}":
            raise ValueError("signed_record: not the canonical JSON of an object")
        signature = orjson.dumps(self._signature(canonical))
        if canonical == b"{}":
            return b'{"signature":' + signature + b"}"
        return b"".join((canonical[:-1], b',"signature":', signature, b"}"))


def generate(name: str = "") -> Signer:
    """A new key pair in memory."""
    private = Ed25519PrivateKey.generate()
    return Signer(private, key_id(private.public_key()), name)


def write_private(signer: Signer, path: Path) -> Path:
    """Write the private key (PEM, mode 0600, created exclusively) and ``path.pub``.

    Refuses to overwrite an existing key: losing a key is not undone by a flag.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = signer.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path}: a key already exists there; refusing to overwrite it"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path = path.with_name(path.name + ".pub")
    public_path.write_text(public_pem(signer.public))
    return public_path


def load_private(path: Path, *, name: str = "") -> Signer:
    """A private key from a PEM file that only its owner can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the private key ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: private key is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return Signer(private, key_id(private.public_key()), name)


class PublicKeys:
    """Public keys by id: every key that may have signed what is being verified."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {key_id(k): k for k in keys}

    @classmethod
    def from_pem_files(cls, paths: Iterable[Path]) -> PublicKeys:
        """Keys from PEM files (a ``.pub`` file each, or several PEM blocks in one)."""
        keys: list[Ed25519PublicKey] = []
        for path in paths:
            try:
                text = path.read_text()
            except OSError as exc:
                raise KeyFileError(f"{path}: cannot read ({exc.strerror})") from None
            blocks = [b for b in text.split("-----END PUBLIC KEY-----") if "BEGIN" in b]
            if not blocks:
                raise KeyFileError(f"{path}: no PEM public key in it")
            keys.extend(
                parse_public(block + "-----END PUBLIC KEY-----\n", source=str(path))
                for block in blocks
            )
        return cls(keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def ids(self) -> list[str]:
        """Every key id, sorted."""
        return sorted(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key with id ``kid``, if known."""
        return self._keys.get(kid)

    def verify_bytes(self, data: bytes, kid: str, sig: str) -> Refusal | None:
        """``None`` when ``sig`` is a valid signature of ``data`` by key ``kid``."""
        public = self._keys.get(kid)
        if public is None:
            return "unknown_key"
        try:
            raw = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            return "malformed_signature"
        try:
            public.verify(raw, data)
        except InvalidSignature:
            return "bad_signature"
        return None

    def verify(self, body: Mapping[str, Any]) -> Refusal | None:
        """``None`` when ``body["signature"]`` is valid over the rest of ``body``.

        Otherwise the reason: unsigned, a malformed signature object, a key id not
        in this set, or a signature that does not match the bytes.
        """
        signature = body.get("signature")
        if signature is None:
            return "unsigned"
        if (
            not isinstance(signature, Mapping)
            or signature.get("alg") != ALG
            or not isinstance(signature.get("key_id"), str)
            or not isinstance(signature.get("sig"), str)
        ):
            return "malformed_signature"
        unsigned = {k: v for k, v in body.items() if k != "signature"}
        return self.verify_bytes(canonical_json(unsigned), signature["key_id"], signature["sig"])

    def signer_of(self, body: Mapping[str, Any]) -> str | None:
        """The key id a body claims to be signed with (unverified)."""
        signature = body.get("signature")
        if isinstance(signature, Mapping) and isinstance(signature.get("key_id"), str):
            return str(signature["key_id"])
        return None


def dev_key(settings: Settings, name: str) -> Path:
    """Where development mode keeps a key it made: ``DATA_DIR/keys/NAME.key``."""
    return settings.data_dir / "keys" / f"{name}.key"


def gate_signer(settings: Settings) -> Signer:
    """The gate's signing key from ``ESCALATION_GATE_KEY_FILE``.

    Unset, it is refused, unless in development mode (``ESCALATION_DEV``), where a key
    is made once under the data directory and reused after.
    """
    if settings.gate_key_file is not None:
        return load_private(settings.gate_key_file, name="escalation-gate")
    if not settings.dev:
        msg = (
            "ESCALATION_GATE_KEY_FILE is not set: the gate signs with a key of its own "
            "(make one with `escalation keys new --gate`), or run in development mode "
            "(ESCALATION_DEV=1) to make one under the data directory"
        )
        raise KeyFileError(msg)
    path = dev_key(settings, "gate")
    if not path.exists():
        write_private(generate("escalation-gate"), path)
    return load_private(path, name="escalation-gate")


def gate_public_keys(settings: Settings) -> PublicKeys:
    """Every public key of the gate a verifier accepts (current and retired)."""
    if settings.gate_public_keys:
        return PublicKeys.from_pem_files(settings.gate_public_keys)
    if settings.gate_key_file is not None:
        return PublicKeys.from_pem_files(
            [settings.gate_key_file.with_name(settings.gate_key_file.name + ".pub")]
        )
    return PublicKeys([gate_signer(settings).public])


def executor_signer(settings: Settings, *, name: str = "escalation-executor") -> Signer:
    """An executor's signing key (its outcomes) from ``ESCALATION_EXECUTOR_KEY_FILE``.

    Unset: refused, unless in development mode, where one is made under the data
    directory once (as ``gate_signer`` does).
    """
    if settings.executor_key_file is not None:
        return load_private(settings.executor_key_file, name=name)
    if not settings.dev:
        msg = (
            "ESCALATION_EXECUTOR_KEY_FILE is not set: an executor signs its outcomes with a "
            "key of its own (make one with `escalation keys new --executor`), or run in "
            "development mode (ESCALATION_DEV=1) to make one under the data directory"
        )
        raise KeyFileError(msg)
    path = dev_key(settings, "executor")
    if not path.exists():
        write_private(generate(name), path)
    return load_private(path, name=name)
