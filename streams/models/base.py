"""Shared building blocks of the wire models: strict scalar types and the base class."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

#: A non-empty identifier or name (ids, services, users, patterns).
Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]
#: Free text with a generous but finite bound.
Text = Annotated[StrictStr, Field(max_length=4096)]
#: A fraction in [0, 1]; NaN and infinities are rejected.
Fraction = Annotated[StrictFloat, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
#: A non-negative count.
Count = Annotated[StrictInt, Field(ge=0, le=2**31)]
#: Automation level 0 (manual) to 4 (autonomous).
Level = Annotated[StrictInt, Field(ge=0, le=4)]


def _iso_only(value: object) -> object:
    # Pydantic would read a JSON number as Unix seconds: 12345 is not a plausible
    # instant for this product, and a producer sending one has a bug.
    if isinstance(value, int | float) and not isinstance(value, bool):
        msg = "an ISO 8601 date-time with a timezone is required, not a number"
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError as a field error
    return value


#: A timezone-aware ISO 8601 instant (an audit product: naive datetimes are refused).
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
Bool = StrictBool

SCHEMA_VERSION = 1


class WireModel(BaseModel):
    """Base of every message: frozen, unknown keys refused, strict scalars.

    Scalars use the ``Strict*`` types so ``"0.9"`` is not a float and ``1`` is not a
    bool, while datetimes still parse from their ISO 8601 JSON form.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


__all__ = [
    "SCHEMA_VERSION",
    "Bool",
    "Count",
    "Fraction",
    "Id",
    "Instant",
    "Level",
    "StrictFloat",
    "StrictInt",
    "StrictStr",
    "Text",
    "WireModel",
]
