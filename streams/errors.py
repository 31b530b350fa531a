"""One root error, one subclass per area (faust's exceptions.py is the model)."""

from typing import Literal

#: Why an input was refused: the dead-letter reason of an ``InputError``.
InputKind = Literal["not_json", "schema", "too_large"]


class EscalationError(Exception):
    """Root of every error this package raises on purpose."""


class InputError(EscalationError, ValueError):
    """A message or file a user or producer gave us is not valid."""

    def __init__(self, field: str, message: str, *, kind: InputKind = "schema") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message
        #: ``not_json``, ``schema`` or ``too_large``: the dead-letter reason.
        self.kind = kind


class PolicyError(EscalationError, ValueError):
    """A policy document is invalid; each problem names file, line and field."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class KafkaLauncherError(EscalationError, RuntimeError):
    """The local Apache Kafka broker could not be fetched, started or stopped."""


class DeliveryError(EscalationError, RuntimeError):
    """A record could not be written to Kafka; nothing produced after it can be trusted."""


class AuditChainError(EscalationError, ValueError):
    """An audit event does not fit the hash chain."""


class KeyFileError(EscalationError, ValueError):
    """A key file is missing, unreadable, of the wrong kind or readable by others."""
