"""Fuzzing the wire decoder: any input gives a model or a one-line ``InputError``, fast.

``decode`` sits in front of every agent (``Gate.decode_or_dlq``) and every file the
command line reads. Whatever arrives, it must return a model instance or raise
``InputError`` whose ``kind`` is a dead-letter reason and whose message is one line;
any other exception would crash an agent (and lose the message) or print a traceback.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sample_messages import CONTEXT, PROPOSAL
from sample_messages import SAMPLES as SHARED

from streams.errors import InputError
from streams.models import MESSAGES, Context, Proposal, decode, encode
from streams.policy import evaluate, parse_policy

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

#: The dead-letter reasons a decoding failure may carry.
KINDS = {"not_json", "schema", "too_large"}
#: The worker's default limit (256 KiB).
MAX_BYTES = 256 * 1024
#: Wall-clock bound of one decode, generous for a loaded 2-core CI machine.
LIMIT_S = 2.0
#: A DeadLetter's ``error`` is Text (4096); a readable one-line message is far shorter.
MAX_MESSAGE = 1000

FUZZ = settings(
    deadline=2000,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_RAW = "\x00raw-token\x00"


def _samples() -> dict[str, dict[str, Any]]:
    """The shared sample messages (tests/unit/sample_messages.py) and a real decision."""
    policy = parse_policy((ROOT / "policies" / "escalation-policy.yaml").read_bytes())
    decision = evaluate(Proposal.model_validate(PROPOSAL), Context.model_validate(CONTEXT), policy)
    return {**copy.deepcopy(SHARED), "decision": decision.model_dump(mode="json")}


SAMPLES = _samples()
NAMES = sorted(MESSAGES)
#: Where a free-form JSON value is allowed: the deepest a valid message may nest.
JSON_VALUE_FIELDS = {
    "proposal": ("action", "parameters", "x"),
    "audit-event": ("event", "data", "x"),
}


def test_every_model_has_a_valid_sample() -> None:
    assert set(SAMPLES) == set(MESSAGES)
    for name, sample in SAMPLES.items():
        assert isinstance(decode(MESSAGES[name], orjson.dumps(sample)), MESSAGES[name])


# ----------------------------------------------------------------------------- helpers


def check(
    model: type[BaseModel], raw: bytes | str, *, max_bytes: int | None = None
) -> BaseModel | InputError:
    """The property: a model, or a one-line InputError of a known kind; in time."""
    started = time.monotonic()
    outcome: BaseModel | InputError
    try:
        outcome = decode(model, raw, max_bytes=max_bytes)
    except InputError as exc:
        outcome = exc
    elapsed = time.monotonic() - started
    assert elapsed < LIMIT_S, f"decode took {elapsed:.2f}s"
    if isinstance(outcome, InputError):
        text = str(outcome)
        assert outcome.kind in KINDS, outcome.kind
        assert text, "an empty error message"
        assert "\n" not in text, text
        assert len(text.splitlines()) == 1, text
        assert len(text) <= MAX_MESSAGE, text[:200]
        if max_bytes is not None and len(raw) > max_bytes:
            assert outcome.kind == "too_large"
    else:
        assert isinstance(outcome, model)
        assert max_bytes is None or len(raw) <= max_bytes
    return outcome


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index path below ``value`` (containers and leaves), depth first."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(obj)
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


def spliced(obj: Any, path: tuple[Any, ...], token: bytes) -> bytes:
    """``obj`` as JSON with the value at ``path`` written as ``token`` (raw bytes)."""
    raw = orjson.dumps(replaced(obj, path, _RAW))
    marker = orjson.dumps(_RAW)
    assert raw.count(marker) == 1
    return raw.replace(marker, token)


def all_leaf_cases() -> list[tuple[str, tuple[Any, ...]]]:
    return [(name, path) for name in NAMES for path in paths(SAMPLES[name])]


LEAVES = all_leaf_cases()

# ------------------------------------------------------------------- random inputs

#: Text a JSON encoder accepts (no lone surrogates).
utf8 = st.characters(codec="utf-8")
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(utf8, max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(utf8, max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
#: NUL, RTL and other bidi marks, BOM, line/paragraph separators, a lone surrogate.
SPECIAL = "\x00\u200f\u202e\u2066\u061c\ufeff\u2028\u2029\x85\r\n\t\ud800\udfff\U0010ffff"
any_text = st.text(
    alphabet=st.characters() | st.characters(categories=["Cs"]) | st.sampled_from(SPECIAL),
    max_size=300,
)
model_names = st.sampled_from(NAMES)


@FUZZ
@given(name=model_names, raw=st.binary(max_size=3000))
def test_random_bytes(name: str, raw: bytes) -> None:
    check(MESSAGES[name], raw, max_bytes=MAX_BYTES)


@FUZZ
@given(name=model_names, raw=st.binary(max_size=300), limit=st.integers(0, 300))
def test_max_bytes_comes_first(name: str, raw: bytes, limit: int) -> None:
    outcome = check(MESSAGES[name], raw, max_bytes=limit)
    if len(raw) > limit:
        assert isinstance(outcome, InputError)
        assert outcome.kind == "too_large"


@FUZZ
@given(name=model_names, text=any_text, as_bytes=st.booleans())
def test_random_unicode_text(name: str, text: str, as_bytes: bool) -> None:
    raw: bytes | str = text.encode("utf-8", "surrogatepass") if as_bytes else text
    check(MESSAGES[name], raw, max_bytes=MAX_BYTES)


@FUZZ
@given(name=model_names, key=any_text, value=any_text)
def test_unicode_in_json_keys_and_strings(name: str, key: str, value: str) -> None:
    # Hand-built JSON: the text may hold surrogates and control characters, which a
    # JSON encoder would refuse or escape.
    body = f'{{"{key}": "{value}", "schema_version": 1}}'
    check(MESSAGES[name], body)
    check(MESSAGES[name], body.encode("utf-8", "surrogatepass"))


@FUZZ
@given(name=model_names, value=json_values)
def test_random_json_values(name: str, value: Any) -> None:
    check(MESSAGES[name], orjson.dumps(value), max_bytes=MAX_BYTES)


@FUZZ
@given(data=st.data(), name=model_names)
def test_valid_shape_random_values(data: st.DataObject, name: str) -> None:
    """Every field of a valid message present, each kept or replaced by random JSON."""
    sample = SAMPLES[name]
    message = {
        key: data.draw(st.just(value) | json_values, label=key) for key, value in sample.items()
    }
    extra = data.draw(st.dictionaries(any_text.filter(_encodable), json_values, max_size=2))
    check(MESSAGES[name], orjson.dumps({**message, **extra}), max_bytes=MAX_BYTES)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@FUZZ
@given(data=st.data())
def test_random_text_at_every_leaf(data: st.DataObject) -> None:
    name, path = data.draw(st.sampled_from(LEAVES))
    value = data.draw(any_text.filter(_encodable) | json_scalars)
    outcome = check(MESSAGES[name], orjson.dumps(replaced(SAMPLES[name], path, value)))
    if isinstance(outcome, BaseModel):
        assert_round_trips(type(outcome), outcome)


# ------------------------------------------------------------------ deep and huge

DEPTHS = [10, 100, 500, 1000, 1023, 1024, 1025, 5000, 100_000]
SHAPES = {
    "arrays-open": lambda n: b"[" * n,
    "arrays": lambda n: b"[" * n + b"]" * n,
    "objects-open": lambda n: b'{"a":' * n,
    "objects": lambda n: b'{"a":' * n + b"1" + b"}" * n,
    "mixed": lambda n: b'[{"a":' * (n // 2) + b"null" + b"}]" * (n // 2),
    "object-of-arrays": lambda n: b'{"schema_version":' + b"[" * n + b"]" * n + b"}",
}


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_deep_nesting(shape: str, depth: int) -> None:
    raw = SHAPES[shape](depth)
    started = time.monotonic()
    for name in NAMES:
        outcome = check(MESSAGES[name], raw)
        assert isinstance(outcome, InputError)
    assert time.monotonic() - started < LIMIT_S * 2


def _deep_cases() -> list[tuple[str, tuple[Any, ...]]]:
    cases = list(JSON_VALUE_FIELDS.items())
    # The first field of every message and every leaf of the proposal.
    cases += [(name, next(iter(paths(SAMPLES[name])))) for name in NAMES]
    cases += [("proposal", path) for path in paths(SAMPLES["proposal"])]
    return cases


@pytest.mark.parametrize(("name", "path"), _deep_cases(), ids=str)
def test_deep_nesting_inside_a_valid_message(name: str, path: tuple[Any, ...]) -> None:
    sample = SAMPLES[name]
    if path in JSON_VALUE_FIELDS.values():
        sample = replaced(sample, path[:-1], {"x": 1})
    started = time.monotonic()
    for depth in DEPTHS:
        for token in (
            b"[" * depth + b"]" * depth,
            b'{"a":' * depth + b"1" + b"}" * depth,
            b"[" * depth,
        ):
            check(MESSAGES[name], spliced(sample, path, token))
    assert time.monotonic() - started < LIMIT_S * 2


@pytest.mark.parametrize("size", [1_000_000, 10_000_000])
def test_huge_strings(size: int) -> None:
    big = "a" * size
    started = time.monotonic()
    for name in ("proposal", "audit-event", "control-command"):
        model = MESSAGES[name]
        sample = SAMPLES[name]
        first = next(iter(sample))
        documents = [
            orjson.dumps(big),
            orjson.dumps({big: 1}),
            orjson.dumps({**sample, first: big}),
            orjson.dumps({**sample, "x" * 100: big}),
            orjson.dumps(replaced(sample, next(p for p in paths(sample) if p[-1] != first), big)),
            b'"' + big.encode(),  # unterminated
        ]
        for raw in documents:
            outcome = check(model, raw)
            assert isinstance(outcome, InputError)
            limited = check(model, raw, max_bytes=MAX_BYTES)
            assert isinstance(limited, InputError)
            assert limited.kind == "too_large"
    assert time.monotonic() - started < LIMIT_S * 5


def test_huge_free_form_value_decodes_without_a_limit() -> None:
    # 2 MB inside ``action.parameters`` is valid; only the worker's byte limit refuses it.
    raw = orjson.dumps(replaced(SAMPLES["proposal"], ("action", "parameters"), {"x": "a" * 2**21}))
    assert isinstance(check(Proposal, raw), Proposal)
    outcome = check(Proposal, raw, max_bytes=MAX_BYTES)
    assert isinstance(outcome, InputError)
    assert outcome.kind == "too_large"


# ------------------------------------------------------------- literals and numbers

NON_FINITE = [b"NaN", b"nan", b"Infinity", b"-Infinity", b"inf", b"-inf", b"1e309", b"-1e309"]
OUT_OF_RANGE = [
    b"-0.0",
    b"-0",
    b"18446744073709551616",  # 2**64
    b"18446744073709551615",  # 2**64 - 1
    b"-18446744073709551617",
    b"9223372036854775808",
    b"1e308",
    b"1e-400",
    b"4.9e-324",
    b"0." + b"0" * 400 + b"1",
    b"9" * 5000,
    b"-" + b"9" * 5000,
    b"1" + b"0" * 310 + b".0",
    b"0x10",
    b"01",
    b"+1",
    b".5",
    b"1.",
    b"1e",
]


@pytest.mark.parametrize("token", NON_FINITE, ids=lambda t: t.decode())
def test_non_finite_literals_are_not_json(token: bytes) -> None:
    for name, path in LEAVES:
        outcome = check(MESSAGES[name], spliced(SAMPLES[name], path, token))
        assert isinstance(outcome, InputError)
        assert outcome.kind == "not_json", (name, path, str(outcome))
    for name in NAMES:
        outcome = check(MESSAGES[name], token)
        assert isinstance(outcome, InputError)


@pytest.mark.parametrize("token", OUT_OF_RANGE, ids=lambda t: t[:24].decode())
def test_numbers_out_of_range_at_every_leaf(token: bytes) -> None:
    for name, path in LEAVES:
        outcome = check(MESSAGES[name], spliced(SAMPLES[name], path, token))
        if isinstance(outcome, BaseModel):
            assert_round_trips(type(outcome), outcome)


def test_numbers_beyond_the_schema_are_refused() -> None:
    for token in (b"18446744073709551616", b"2147483649", b"-1", b"1e20"):
        outcome = check(Proposal, spliced(SAMPLES["proposal"], ("blast_radius", "services"), token))
        assert isinstance(outcome, InputError)
        assert outcome.field == "blast_radius.services"
    negative_zero = spliced(SAMPLES["proposal"], ("confidence", "model"), b"-0.0")
    decoded = check(Proposal, negative_zero)
    assert isinstance(decoded, Proposal)
    assert decoded.confidence.model == 0.0


# ------------------------------------------------------------------- wrong types

OTHER_TYPES: list[Any] = ["text", "", 7, -1, 1.5, True, False, None, [], [1, "a"], {}, {"a": 1}]


@pytest.mark.parametrize("name", NAMES)
def test_wrong_type_at_every_field(name: str) -> None:
    sample = SAMPLES[name]
    refused = 0
    for path in paths(sample):
        for value in OTHER_TYPES:
            outcome = check(MESSAGES[name], orjson.dumps(replaced(sample, path, value)))
            if isinstance(outcome, InputError):
                refused += 1
                assert outcome.kind == "schema"
            else:
                assert_round_trips(MESSAGES[name], outcome)
    assert refused > 0


@pytest.mark.parametrize("name", NAMES)
def test_missing_and_extra_fields(name: str) -> None:
    sample = SAMPLES[name]
    for path in paths(sample):
        container = sample
        for part in path[:-1]:
            container = container[part]
        if isinstance(container, dict):
            without = copy.deepcopy(sample)
            target = without
            for part in path[:-1]:
                target = target[part]
            del target[path[-1]]
            check(MESSAGES[name], orjson.dumps(without))
            extra = replaced(sample, (*path[:-1], "unexpected\n\u202ekey\x00"), 1)
            outcome = check(MESSAGES[name], orjson.dumps(extra))
            if len(path) == 1:  # nested free-form mappings (parameters, data) take any key
                assert isinstance(outcome, InputError)
                assert outcome.kind == "schema"
                assert outcome.field == repr("unexpected\n\u202ekey\x00")
    for value in (None, 1, "x", [], [sample], True):
        outcome = check(MESSAGES[name], orjson.dumps(value))
        assert isinstance(outcome, InputError)
        assert outcome.kind == "schema"


# --------------------------------------------------------- duplicate keys and BOM


@pytest.mark.parametrize("name", NAMES)
def test_duplicate_keys(name: str) -> None:
    sample = SAMPLES[name]
    raw = orjson.dumps(sample)
    for key, value in sample.items():
        for other in (value, "other", 12345, None, {"a": [1]}):
            doubled = raw[:-1] + b"," + orjson.dumps(key) + b":" + orjson.dumps(other) + b"}"
            outcome = check(MESSAGES[name], doubled)
            # The last one wins, as with Python's json module: every reader of the
            # topic sees the same message (a signature over one reading holds for all).
            assert json.loads(doubled)[key] == other
            last = check(MESSAGES[name], orjson.dumps({**sample, key: other}))
            assert type(outcome) is type(last)
            if isinstance(outcome, BaseModel):
                assert outcome == last
        inside = b'{"' + key.encode() + b'":1,' + raw[1:]
        check(MESSAGES[name], inside)


@pytest.mark.parametrize("name", NAMES)
def test_byte_order_marks_and_other_encodings(name: str) -> None:
    raw = orjson.dumps(SAMPLES[name])
    text = raw.decode()
    for variant in (
        b"\xef\xbb\xbf" + raw,
        b"\xff\xfe" + text.encode("utf-16-le"),
        b"\xfe\xff" + text.encode("utf-16-be"),
        text.encode("utf-16"),
        text.encode("utf-32"),
        raw + b"\x00",
        raw + b"\xef\xbb\xbf",
        raw.replace(b'"', b'"\xc0\xaf', 1),  # an overlong UTF-8 sequence
    ):
        outcome = check(MESSAGES[name], variant)
        assert isinstance(outcome, InputError)
        assert outcome.kind == "not_json"
    outcome = check(MESSAGES[name], "\ufeff" + text)
    assert isinstance(outcome, InputError)


# ------------------------------------------------------------------- round trips


def assert_round_trips(model: type[BaseModel], value: BaseModel) -> None:
    encoded = encode(value)
    again = decode(model, encoded)
    assert again == value
    assert encode(again) == encoded


@pytest.mark.parametrize("name", NAMES)
def test_valid_messages_round_trip(name: str) -> None:
    model = MESSAGES[name]
    decoded = check(model, orjson.dumps(SAMPLES[name]), max_bytes=MAX_BYTES)
    assert isinstance(decoded, model)
    assert_round_trips(model, decoded)
    assert isinstance(check(model, orjson.dumps(SAMPLES[name]).decode()), model)
    pretty = orjson.dumps(SAMPLES[name], option=orjson.OPT_INDENT_2)
    assert check(model, b" \n\t" + pretty + b"\r\n ") == decoded


@FUZZ
@given(data=st.data())
def test_valid_messages_with_random_strings_round_trip(data: st.DataObject) -> None:
    name, path = data.draw(
        st.sampled_from([(n, p) for n, p in LEAVES if isinstance(_at(SAMPLES[n], p), str)])
    )
    text = data.draw(st.text(alphabet=utf8 | st.sampled_from(SPECIAL[:12]), max_size=50))
    outcome = check(MESSAGES[name], orjson.dumps(replaced(SAMPLES[name], path, text)))
    if isinstance(outcome, BaseModel):
        assert_round_trips(MESSAGES[name], outcome)


def _at(obj: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj
