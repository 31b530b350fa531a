"""PURE: operator commands on ``control``, each signed by the people who give it.

Who may do what is the keyring's: ``freeze`` (freeze, unfreeze), ``requalify``
(requalify, revoke), ``load_policy`` (reload_policy), ``import_history``. A policy
goes live only when it validates, accepts the keyring in force, and is signed by a
holder of ``load_policy``; when it grants more autonomy than the policy in force
(``escalation policy diff``), by two different ones. Anything else is refused,
audited and counted, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.errors import PolicyError
from streams.handlers.effects import AuditDraft, Count, Effects, Origin
from streams.keys import PublicKeys
from streams.models import AuditKind, ControlCommand
from streams.policy import Policy, parse_policy
from streams.policy.keyring import Keyring, Role, Verified, without
from streams.review.diff import diff_policies
from streams.state.records import (
    StateUpdate,
    freeze_update,
    import_updates,
    policy_update,
    requalification_update,
)

ROLE: dict[str, Role] = {
    "freeze": "freeze",
    "unfreeze": "freeze",
    "requalify": "requalify",
    "revoke": "requalify",
    "reload_policy": "load_policy",
    "import_history": "import_history",
}


def signers(
    command: ControlCommand, body: Mapping[str, Any], keyring: Keyring, policy: Policy
) -> list[str] | str:
    """The people who signed ``command`` for its role, or why it is refused.

    The first signature is ``user``'s (their own key, or a channel's that verified
    them); each further one is a co-signer's own key.
    """
    role = ROLE[command.command]
    unsigned = without(body, "signatures")
    signatures = body.get("signatures") or []
    if not isinstance(signatures, list) or not signatures:
        return "unsigned"
    people: list[str] = []
    for index, signature in enumerate(signatures):
        if index == 0:
            user = command.user
        else:
            verified = keyring.verify(unsigned, signature)
            if isinstance(verified, str):
                return verified
            if verified.holder.kind != "person":
                return "not_a_person"
            user = verified.holder.name
        checked: Verified | str = keyring.authorize(
            unsigned, signature, user=user, role=role, ai_systems=policy.trusted_ai_systems
        )
        if isinstance(checked, str):
            return checked
        if user not in people:
            people.append(user)
    return people


def _bootstrap(
    command: ControlCommand,
    body: Mapping[str, Any],
    gate_keys: PublicKeys | None,
    policy_stored: bool,
) -> bool:
    signatures = body.get("signatures")
    if command.command != "reload_policy" or gate_keys is None or policy_stored:
        return False
    if not isinstance(signatures, list) or len(signatures) != 1:
        return False
    return gate_keys.verify({**without(body, "signatures"), "signature": signatures[0]}) is None


def refused(command: ControlCommand, origin: Origin, reason: str, **data: Any) -> Effects:
    """A command the gate will not carry out: audited with the reason, counted."""
    audit = AuditDraft(
        "command_refused",
        event_id=f"control:{origin.partition}:{origin.offset}",
        at=origin.instant,
        actor=command.user,
        data={
            "command": command.model_dump(mode="json", exclude={"policy_yaml", "records"}),
            "reason": reason,
            **data,
        },
        fields={"command": command.command, "reason": reason},
    )
    return Effects(audits=(audit,), metrics=(Count("commands_refused", (reason, command.command)),))


def on_control(
    command: ControlCommand,
    body: Mapping[str, Any],
    origin: Origin,
    *,
    keyring: Keyring,
    policy: Policy,
    gate_keys: PublicKeys | None = None,
    policy_stored: bool = True,
) -> Effects:
    """Freeze, unfreeze, re-qualify, revoke, reload the policy or import history.

    Judged at the gate's instant (``origin``), never the command's own ``at``. On a
    fresh cluster (``policy_stored`` false) a worker announces its own policy file,
    signed with the gate's key (``gate_keys``): that bootstrap is the one load no
    person signs, and it can never replace a stored policy.
    """
    people = (
        ["escalation-gate"]
        if _bootstrap(command, body, gate_keys, policy_stored)
        else signers(command, body, keyring, policy)
    )
    if isinstance(people, str):
        return refused(command, origin, people)
    now = origin.instant
    at = now.timestamp()
    data: dict[str, Any] = {
        "command": command.model_dump(mode="json", exclude={"policy_yaml", "records"}),
        "signed_by": people,
    }
    state: tuple[StateUpdate, ...] = ()
    counts: tuple[Count, ...] = ()
    kind: AuditKind
    # == rather than `in`: mypy narrows the Literal of the command only this way.
    if command.command == "freeze" or command.command == "unfreeze":  # noqa: PLR1714
        kind = command.command
        state = (
            freeze_update(command.service or "*", op=command.command, user=command.user, at=at),
        )
    elif command.command == "requalify" or command.command == "revoke":  # noqa: PLR1714
        assert command.pattern is not None  # noqa: S101 - the model guarantees it
        assert command.action_type is not None  # noqa: S101
        kind = "requalification" if command.command == "requalify" else "requalification_revoked"
        state = (
            requalification_update(
                command.pattern,
                command.action_type,
                op=command.command,
                user=command.user,
                at=at,
                reason=command.reason,
            ),
        )
    elif command.command == "import_history":
        kind = "history_import"
        # One update per pattern and per AI system for the whole batch, its id from the
        # batch's content: a rerun of the same file folds nothing (records.import_updates).
        state = import_updates(command.records)
        data["records"] = len(command.records)
    else:
        text = command.policy_yaml or ""
        try:
            new = parse_policy(text, source=f"control:{command.user}")
        except Exception as exc:  # any failure to parse is a rejection, never a crash
            kind = "policy_rejected"
            data["problems"] = (
                exc.problems if isinstance(exc, PolicyError) else [f"{type(exc).__name__}"]
            )
            counts = (Count("policy_rejected"),)
        else:
            if new.keyring_sha256 is not None and new.keyring_sha256 != keyring.digest:
                return refused(
                    command, origin, "keyring_mismatch", version=new.version, digest=new.digest
                )
            more = diff_policies(policy, new).grants_more_autonomy
            if more and len(people) < 2:
                return refused(
                    command,
                    origin,
                    "two_person_rule",
                    version=new.version,
                    digest=new.digest,
                    signed_by=people,
                )
            kind = "policy_load"
            data.update(version=new.version, digest=new.digest, more_autonomy=more)
            state = (policy_update(yaml=text, digest=new.digest, by=",".join(people)),)
    audit = AuditDraft(
        kind,
        event_id=f"control:{origin.partition}:{origin.offset}",
        at=now,
        actor=command.user,
        data=data,
        fields={"service": command.service or "*", "command": command.command},
    )
    return Effects(audits=(audit,), state=state, metrics=counts)
