"""JSON encoding and decoding of wire models with orjson, and one-line error messages."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from streams.errors import InputError

M = TypeVar("M", bound=BaseModel)

_MAX_SHOWN = 60
_MAX_FIELD = 200


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTC ``Z`` datetimes: the bytes that get hashed/signed."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)


def encode(model: BaseModel) -> bytes:
    """Serialise a model to JSON bytes (orjson)."""
    return orjson.dumps(model.model_dump(mode="json"), option=orjson.OPT_UTC_Z)


def _short(text: str, limit: int = _MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(part: str) -> str:
    # A key comes from the input: escape line breaks and control characters (the
    # message must stay one line) and cut a long one short.
    return _short(part if part.isprintable() else repr(part))


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{_key(part)}" if out else _key(part))
    return _short(out, _MAX_FIELD)


def _shown(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:  # a value nested deeper than repr() can go
        text = f"<{type(value).__name__} nested too deeply>"
    return _short(text)


def describe_validation_error(error: ValidationError) -> InputError:
    """The first error of a pydantic validation, as one line naming the field."""
    first = error.errors(include_url=False)[0]
    field = _where(tuple(first["loc"])) or "(message)"
    message = first["msg"]
    if first["type"] == "missing":
        message = "field required"
    elif first["type"] != "extra_forbidden" and "input" in first:
        message = f"{message}, got {_shown(first['input'])}"
    more = error.error_count() - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return InputError(field, message, kind="schema")


def parse_json(raw: bytes | str) -> Any:
    """orjson.loads with a one-line ``InputError`` (kind ``not_json``) on failure."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError("", f"not JSON: {exc}", kind="not_json") from None
    except RecursionError:
        raise InputError("", "not JSON: nested too deeply", kind="not_json") from None


def validate(model: type[M], obj: Any) -> M:
    """Validate a decoded JSON value against a model; one-line ``InputError`` on failure."""
    if not isinstance(obj, dict):
        raise InputError(
            "(message)", f"expected a JSON object, got {type(obj).__name__}", kind="schema"
        )
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise describe_validation_error(exc) from None
    except RecursionError:
        raise InputError("(message)", "nested too deeply", kind="schema") from None


def decode(model: type[M], raw: bytes | str, *, max_bytes: int | None = None) -> M:
    """Decode JSON bytes into a model, or raise ``InputError`` naming the field."""
    return decode_with_body(model, raw, max_bytes=max_bytes)[0]


def decode_with_body(
    model: type[M], raw: bytes | str, *, max_bytes: int | None = None
) -> tuple[M, dict[str, Any]]:
    """The model and the JSON object it was decoded from (what a signature covers)."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise InputError(
            "(message)", f"{len(raw)} bytes exceeds the limit of {max_bytes}", kind="too_large"
        )
    body = parse_json(raw)
    return validate(model, body), body
