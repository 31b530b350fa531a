"""Ed25519 signatures with key ids (streams/keys.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import keys
from streams.errors import KeyFileError
from streams.settings import Settings


def test_a_signed_body_verifies_and_any_change_is_refused() -> None:
    signer = keys.generate("alice")
    ring = keys.PublicKeys([signer.public])
    body = signer.sign({"decision_id": "d-1", "kind": "approve", "n": 1})
    assert ring.verify(body) is None
    assert ring.verify({**body, "n": 2}) == "bad_signature"
    assert ring.verify({k: v for k, v in body.items() if k != "signature"}) == "unsigned"


def test_a_key_outside_the_set_is_unknown_and_rotation_keeps_old_keys() -> None:
    old, new = keys.generate(), keys.generate()
    assert keys.PublicKeys([new.public]).verify(old.sign({"a": 1})) == "unknown_key"
    both = keys.PublicKeys([old.public, new.public])
    assert both.verify(old.sign({"a": 1})) is None
    assert both.verify(new.sign({"a": 1})) is None


@pytest.mark.parametrize(
    "signature",
    [{"alg": "hmac"}, "abc", {"alg": "ed25519", "key_id": 1, "sig": "x"}],
)
def test_a_malformed_signature_object_is_refused(signature: object) -> None:
    assert keys.PublicKeys().verify({"a": 1, "signature": signature}) == "malformed_signature"


def test_a_signature_that_is_not_base64_is_malformed() -> None:
    signer = keys.generate()
    body = signer.sign({"a": 1})
    body["signature"] = {**body["signature"], "sig": "not base64!"}
    assert keys.PublicKeys([signer.public]).verify(body) == "malformed_signature"


def test_private_keys_are_written_0600_and_never_overwritten(tmp_path: Path) -> None:
    signer = keys.generate("bob")
    path = tmp_path / "bob.key"
    public_path = keys.write_private(signer, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.load_private(path).key_id == signer.key_id
    assert keys.PublicKeys.from_pem_files([public_path]).ids() == [signer.key_id]
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        keys.write_private(keys.generate(), path)


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    keys.write_private(keys.generate(), path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        keys.load_private(path)


def test_several_public_keys_in_one_file(tmp_path: Path) -> None:
    a, b = keys.generate(), keys.generate()
    path = tmp_path / "gate.pub"
    path.write_text(keys.public_pem(a.public) + keys.public_pem(b.public))
    assert keys.PublicKeys.from_pem_files([path]).ids() == sorted([a.key_id, b.key_id])


def test_the_gate_refuses_to_run_without_a_key_outside_development(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="ESCALATION_GATE_KEY_FILE is not set"):
        keys.gate_signer(Settings(data_dir=tmp_path))
    dev = Settings(data_dir=tmp_path, dev=True)
    first = keys.gate_signer(dev)
    assert keys.gate_signer(dev).key_id == first.key_id  # made once, then reused
    assert keys.gate_public_keys(dev).ids() == [first.key_id]


def test_a_configured_gate_key_and_its_retired_keys_verify(tmp_path: Path) -> None:
    old, new = keys.generate(), keys.generate()
    old_pub = keys.write_private(old, tmp_path / "old.key")
    new_pub = keys.write_private(new, tmp_path / "new.key")
    settings = Settings(gate_key_file=tmp_path / "new.key", gate_public_keys=(new_pub, old_pub))
    assert keys.gate_signer(settings).key_id == new.key_id
    assert keys.gate_public_keys(settings).verify(old.sign({"a": 1})) is None
