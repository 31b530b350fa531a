"""PURE: Block Kit messages and the change-record modal, rendered from a record.

Slack's limits are kept here (header text 150 characters, section text 3000, ten
fields per section, 50 blocks per message): a long summary or many conditions are
cut, never refused by Slack.
"""

from __future__ import annotations

import json
from typing import Any

from streams.slack.track import Record, has_buttons, when

APPROVE = "escalation_approve"
REJECT = "escalation_reject"
REJECT_FP = "escalation_reject_false_positive"
ABORT = "escalation_abort"
CHANGE_RECORD_VIEW = "escalation_change_record"
CHANGE_RECORD_BLOCK = "change_record"
CHANGE_RECORD_INPUT = "value"

SECTION_LIMIT = 3000
HEADER_LIMIT = 150


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str, limit: int = SECTION_LIMIT) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(text, limit), "emoji": True}


def _md(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": _cut(text, SECTION_LIMIT)}


def _escape(text: Any) -> str:
    # Slack mrkdwn: &, < and > are control characters (links, mentions).
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_date(at: float | None) -> str:
    """A date token every reader sees in their own time zone, with a UTC fallback."""
    if at is None:
        return "none"
    return f"<!date^{int(at)}^{{date_short_pretty}} {{time_secs}}|{when(at)}>"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "none" if value is None else str(value)


def _reasons(view: dict[str, Any]) -> str:
    lines = []
    for c in view["reasons"]:
        operator = ("not " if c["rule"] in _ALL else "") + str(c["operator"])
        threshold = "" if c["operator"] == "non-empty" else f" {_escape(_value(c['threshold']))}"
        lines.append(
            f"• `{_escape(c['name'])}` {_escape(_value(c['observed']))} {_escape(operator)}"
            f"{threshold}  (rule {_escape(c['rule'])})"
        )
    return "\n".join(lines) or "none"


_ALL = frozenset({"level4_autonomous", "level3_conditional"})


def _confidence(view: dict[str, Any]) -> str:
    c = view["confidence"]
    parts = [f"model {_value(c['model'])}"]
    if c.get("heuristic") is not None:
        parts.append(f"heuristic {_value(c['heuristic'])}")
    return " · ".join(parts) + f" → *{_value(c['composite'])}*"


def _target(view: dict[str, Any]) -> str:
    t = view["target"]
    where = ", ".join(str(t[k]) for k in ("kind", "namespace", "environment") if t.get(k))
    return f"`{_escape(t['service'])}`" + (f" ({_escape(where)})" if where else "")


def _status_lines(record: Record) -> list[str]:
    lines: list[str] = []
    view = record["view"]
    required = int(view.get("approvals_required") or 1)
    if record["level"] == 2 and required > 1:
        given = ", ".join(f"{a['user']} at {when(a['at'])}" for a in record["approvals"])
        lines.append(
            f":busts_in_silhouette: Needs *{required} different approvers*: "
            f"{len(record['approvals'])} of {required} so far" + (f" ({given})" if given else "")
        )
    lines.extend(
        f":alarm_clock: No answer by the deadline: on-call paged "
        f"(escalation {e['number']}) at {when(e['at'])}"
        for e in record["escalations"]
    )
    answer = record.get("answer")
    if answer:
        if answer["kind"] == "approve":
            extra = f" with change record `{answer['change_record']}`"
            lines.append(
                f":white_check_mark: *Approved* by {answer['user']} at {when(answer['at'])}"
                + (extra if answer.get("change_record") else "")
            )
        elif answer["kind"] == "reject":
            fp = " as a *false positive*" if answer.get("false_positive") else ""
            lines.append(f":x: *Rejected*{fp} by {answer['user']} at {when(answer['at'])}")
        else:
            lines.append(f":octagonal_sign: *Aborted* by {answer['user']} at {when(answer['at'])}")
    if record["status"] == "window_closed":
        lines.append(f":lock: Abort window closed at {when(record.get('closed_at'))}")
    for c in record["commands"]:
        verb = "Execution ordered" if c["type"] == "execute" else "Abort ordered"
        lines.append(f":gear: {verb} (by {c['by']}) at {when(c['at'])}")
    outcome = record.get("outcome")
    if outcome:
        icon = ":large_green_circle:" if outcome["result"] == "success" else ":red_circle:"
        notes = [n for n in ("suboptimal", "not_needed") if outcome.get(n)]
        lines.append(
            f"{icon} Outcome: *{outcome['result']}*, verification {outcome['verification']}"
            + (f" ({', '.join(notes)})" if notes else "")
            + f" at {when(outcome['at'])}"
        )
    return lines


def _button(action_id: str, text: str, decision_id: str, style: str | None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": _plain(text, 75),
        "value": decision_id,
    }
    if style:
        button["style"] = style
    return button


def _buttons(record: Record) -> dict[str, Any]:
    decision_id = record["decision_id"]
    if record["level"] == 3:
        elements = [_button(ABORT, "Abort", decision_id, "danger")]
        elements[0]["confirm"] = {
            "title": _plain("Abort this execution?", 100),
            "text": _md("The executor is told to abort and roll back."),
            "confirm": _plain("Abort", 30),
            "deny": _plain("Keep running", 30),
        }
    else:
        elements = [
            _button(APPROVE, "Approve", decision_id, "primary"),
            _button(REJECT, "Reject", decision_id, "danger"),
            _button(REJECT_FP, "Reject as false positive", decision_id, None),
        ]
    return {"type": "actions", "block_id": f"answer:{decision_id}", "elements": elements}


def title(record: Record) -> str:
    """The message's one-line text (notifications and screen readers)."""
    view = record["view"]
    service = view["target"]["service"]
    if record["level"] == 3:
        return f"Executing {view['action_type']} on {service} (Level 3): abort window open"
    return f"Approval needed: {view['action_type']} on {service} (Level 2)"


def message(record: Record) -> tuple[str, list[dict[str, Any]]]:
    """``(text, blocks)`` of the message about one decision, as it stands now."""
    view = record["view"]
    level = record["level"]
    header = title(record)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(header, HEADER_LIMIT)},
        {
            "type": "section",
            "text": _md(
                f"*{_escape(view['ai_system'])}* proposes *{_escape(view['action_type'])}* "
                f"on {_target(view)} (pattern `{_escape(view['pattern'])}`)\n"
                f"> {_escape(view['summary']) or '(no summary)'}"
            ),
        },
    ]
    model = f" ({_escape(view['model'])})" if view.get("model") else ""
    fields = [
        _md(f"*AI system*\n{_escape(view['ai_system'])}{model}"),
        _md(f"*Confidence*\n{_confidence(view)}"),
        _md(f"*Triggers*\n{_escape(', '.join(view['triggers'])) or 'none'}"),
    ]
    if level == 2:
        fields.append(_md(f"*Deadline*\n{slack_date(view.get('approval_timeout_at'))}"))
    else:
        fields.append(_md(f"*Abort window ends*\n{slack_date(view.get('abort_window_ends_at'))}"))
    fields.append(
        _md(f"*Policy*\nv{_escape(view.get('policy_version'))} · {_escape(view['deciding_rule'])}")
    )
    fields.append(_md(f"*Decision*\n`{_escape(record['decision_id'])}`"))
    blocks.append({"type": "section", "fields": fields})
    reasons_title = "Why a human is asked" if level == 2 else "What kept it from Level 4"
    blocks.append({"type": "section", "text": _md(f"*{reasons_title}*\n{_reasons(view)}")})
    if view.get("change_record_required"):
        frameworks = ", ".join(view.get("regulated") or []) or "policy"
        blocks.append(
            {
                "type": "context",
                "elements": [
                    _md(
                        f":lock: Regulated action ({_escape(frameworks)}): approving asks for "
                        "the change record"
                    )
                ],
            }
        )
    status = _status_lines(record)
    if status:
        blocks.append({"type": "section", "text": _md("\n".join(status))})
    if has_buttons(record):
        blocks.append(_buttons(record))
    return title(record), blocks


def change_record_modal(record: Record, metadata: dict[str, Any]) -> dict[str, Any]:
    """The modal a regulated approval opens: the change record is required."""
    view = record["view"]
    return {
        "type": "modal",
        "callback_id": CHANGE_RECORD_VIEW,
        "private_metadata": json.dumps(metadata, separators=(",", ":")),
        "title": _plain("Change record", 24),
        "submit": _plain("Approve", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            {
                "type": "section",
                "text": _md(
                    f"Approve *{_escape(view['action_type'])}* on {_target(view)}: this action is "
                    f"regulated ({_escape(', '.join(view.get('regulated') or []) or 'policy')}) "
                    "and needs the id of its change record."
                ),
            },
            {
                "type": "input",
                "block_id": CHANGE_RECORD_BLOCK,
                "label": _plain("Change record id", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": CHANGE_RECORD_INPUT,
                    "placeholder": _plain("CHG-123456", 150),
                    "max_length": 256,
                },
            },
        ],
    }


def notice(text: str) -> list[dict[str, Any]]:
    """A one-section message (ephemeral replies, Level 4 verification failures)."""
    return [{"type": "section", "text": _md(text)}]


def verification_failed(outcome: dict[str, Any], channel_text: str) -> list[dict[str, Any]]:
    """A Level 4 action whose verification failed: the only time Level 4 speaks."""
    return notice(
        f":rotating_light: *Level 4 verification failed*: {_escape(outcome.get('action_type'))} "
        f"on `{_escape(outcome.get('service'))}` (decision `{_escape(outcome.get('decision_id'))}`"
        f"). On-call is paged and the automation's re-qualification is revoked. {channel_text}"
    )
