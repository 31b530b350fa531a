"""What the console writes is signed by the console's key, naming the person signed in."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from streams import keys
from streams.console.publish import build_answer, build_control, control_bytes, sign_answer
from streams.errors import InputError
from streams.models import encode

NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def test_an_answer_is_signed_by_the_console_for_the_person() -> None:
    console = keys.generate("console")
    answer = sign_answer(build_answer("approve", "d-1", "alice", now=NOW), console)
    body = orjson.loads(encode(answer))
    assert (body["user"], body["channel"]) == ("alice", "console")
    assert body["signature"]["key_id"] == console.key_id
    assert keys.PublicKeys([console.public]).verify(body) is None
    body["user"] = "mallory"
    assert keys.PublicKeys([console.public]).verify(body) == "bad_signature"


def test_a_freeze_is_signed_by_the_console_for_the_person() -> None:
    console = keys.generate("console")
    body = orjson.loads(control_bytes(build_control("freeze", "alice", now=NOW), console))
    (signature,) = body.pop("signatures")
    data = orjson.dumps({**body, "signature": signature})
    # The same canonical bytes: every field but the signatures.
    assert keys.PublicKeys([console.public]).verify(orjson.loads(data)) is None
    assert body["user"] == "alice"


def test_a_bad_field_names_itself() -> None:
    with pytest.raises(InputError) as raised:
        build_answer("approve", "d-1", "alice", now=NOW, reason="x" * 5000)
    assert raised.value.field == "reason"
    with pytest.raises(InputError) as raised:
        build_control("freeze", "", now=NOW)
    assert raised.value.field == "user"
