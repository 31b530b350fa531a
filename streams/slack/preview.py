"""An HTML page that shows Block Kit messages roughly as Slack draws them.

For reviewing a message's content without a Slack workspace, and for the
screenshot in docs/slack.md (``python -m streams.slack.preview OUT.html``). Only
the blocks and the mrkdwn this service uses are drawn: header, section (text and
fields), context, actions (buttons); bold, italic, code, quotes, date tokens,
user mentions and the handful of emoji shortcodes in the messages.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import sys
from pathlib import Path
from typing import Any

# Drawn with glyphs of the DejaVu fonts (the machine has no colour emoji font).
EMOJI = {
    "white_check_mark": ("✔", "#007a5a"),
    "x": ("✖", "#e01e5a"),
    "octagonal_sign": ("✖", "#e01e5a"),
    "alarm_clock": ("⌛", "#e8912d"),
    "lock": ("⚠", "#616061"),
    "gear": ("⚙", "#616061"),
    "large_green_circle": ("●", "#2eb67d"),
    "red_circle": ("●", "#e01e5a"),
    "busts_in_silhouette": ("⚇", "#1264a3"),
    "rotating_light": ("⚠", "#e01e5a"),
    "no_entry": ("⛔", "#e01e5a"),
    "hourglass": ("⌛", "#616061"),
    "outbox_tray": ("➦", "#1264a3"),
    "repeat": ("↻", "#616061"),
    "warning": ("⚠", "#e8912d"),
}

STYLE = """
body { font-family: Lato, "Helvetica Neue", Arial, sans-serif; background: #f8f8f8; margin: 0;
       zoom: 0.68; }
.channel { background: #fff; max-width: 1180px; margin: 16px auto; border: 1px solid #ddd;
           border-radius: 8px; }
.bar { padding: 10px 20px; border-bottom: 1px solid #ddd; font-weight: 900; font-size: 18px; }
.msg { display: flex; padding: 12px 20px; }
.avatar { width: 36px; height: 36px; border-radius: 6px; background: #4a154b; color: #fff;
          font-weight: 900; display: flex; align-items: center; justify-content: center;
          margin-right: 10px; flex: none; }
.who { font-weight: 900; } .app { background: #ddd; font-size: 10px; padding: 1px 3px;
       border-radius: 2px; margin-left: 4px; } .time { color: #616061; font-size: 12px; }
.body { font-size: 15px; line-height: 1.45; color: #1d1c1d; flex: 1; }
h3 { font-size: 18px; margin: 6px 0; }
.section { margin: 6px 0; white-space: pre-wrap; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 6px 24px; margin: 8px 0; }
.context { color: #616061; font-size: 13px; margin: 6px 0; }
code { background: #f6f6f6; border: 1px solid #e1e1e1; color: #e01e5a; border-radius: 3px;
       padding: 0 3px; font-size: 12px; }
blockquote { border-left: 4px solid #ddd; margin: 2px 0; padding-left: 10px; }
.actions { margin: 8px 0; }
.btn { display: inline-block; border: 1px solid #bbb; border-radius: 4px; padding: 4px 12px;
       font-weight: 700; font-size: 14px; margin-right: 8px; background: #fff; }
.primary { background: #007a5a; color: #fff; border-color: #007a5a; }
.danger { background: #e01e5a; color: #fff; border-color: #e01e5a; }
.edited { color: #616061; font-size: 12px; }
"""


def mrkdwn(text: str) -> str:
    """Slack's mrkdwn (the subset the service writes) as HTML; everything else escaped."""
    # The service escapes &, < and > itself; undo that first, then escape once for HTML.
    tokens: list[str] = []

    def keep(rendered: str) -> str:
        tokens.append(rendered)
        return f"\x00{len(tokens) - 1}\x00"

    text = re.sub(r"<!date\^\d+\^[^|>]*\|([^>]*)>", lambda m: keep(html.escape(m[1])), text)
    text = re.sub(r"<@([A-Z0-9]+)>", lambda m: keep(f"<b>@{html.escape(m[1])}</b>"), text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"<b>\1</b>", out)
    out = re.sub(r"(?<![\w_])_([^_\n]+)_(?![\w_])", r"<i>\1</i>", out)
    out = re.sub(r":([a-z_]+):", _emoji, out)
    out = re.sub(r"(?m)^&gt; ?(.*)$", r"<blockquote>\1</blockquote>", out)
    return re.sub(r"\x00(\d+)\x00", lambda m: tokens[int(m[1])], out)


def _emoji(match: re.Match[str]) -> str:
    glyph = EMOJI.get(match[1])
    if glyph is None:
        return match[0]
    return f"<span style='color:{glyph[1]};font-weight:900'>{glyph[0]}</span>"


def _text(obj: dict[str, Any]) -> str:
    if obj.get("type") == "mrkdwn":
        return mrkdwn(obj["text"])
    return html.escape(obj.get("text", ""))


def block_html(block: dict[str, Any]) -> str:
    kind = block["type"]
    if kind == "header":
        return f"<h3>{_text(block['text'])}</h3>"
    if kind == "section":
        parts = []
        if "text" in block:
            parts.append(f"<div class='section'>{_text(block['text'])}</div>")
        if block.get("fields"):
            cells = "".join(f"<div class='section'>{_text(f)}</div>" for f in block["fields"])
            parts.append(f"<div class='fields'>{cells}</div>")
        return "".join(parts)
    if kind == "context":
        return "<div class='context'>" + " ".join(_text(e) for e in block["elements"]) + "</div>"
    if kind == "actions":
        buttons = "".join(
            f"<span class='btn {html.escape(e.get('style', ''))}'>{_text(e['text'])}</span>"
            for e in block["elements"]
        )
        return f"<div class='actions'>{buttons}</div>"
    return ""


def page(messages: list[tuple[str, list[dict[str, Any]], bool]], channel: str) -> str:
    """A channel with ``(time, blocks, edited)`` messages from the app."""
    rows = []
    for at, content, edited in messages:
        body = "".join(block_html(b) for b in content)
        note = "<span class='edited'>(edited)</span>" if edited else ""
        rows.append(
            "<div class='msg'><div class='avatar'>EG</div><div class='body'>"
            f"<span class='who'>Escalation Gate</span><span class='app'>APP</span> "
            f"<span class='time'>{html.escape(at)}</span> {note}{body}</div></div>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(channel)}</title>"
        f"<style>{STYLE}</style></head><body><div class='channel'>"
        f"<div class='bar'># {html.escape(channel)}</div>{''.join(rows)}</div></body></html>"
    )


def sample_page() -> str:
    """The docs' example: a regulated two-person approval half way, and an answered one."""
    from streams.files import read_policy  # noqa: PLC0415
    from streams.models import Context, Proposal  # noqa: PLC0415
    from streams.models.decision import decision_json  # noqa: PLC0415
    from streams.policy import evaluate  # noqa: PLC0415
    from streams.settings import DEFAULT_POLICY  # noqa: PLC0415
    from streams.slack import blocks, track  # noqa: PLC0415

    fixtures = DEFAULT_POLICY.parent.parent / "tests" / "fixtures"
    policy = read_policy(DEFAULT_POLICY)
    now = dt.datetime(2026, 12, 1, 21, 40, tzinfo=dt.UTC)
    context = Context.model_validate_json((fixtures / "context.json").read_bytes())
    context = context.model_copy(update={"now": now})
    regulated = Proposal.model_validate_json((fixtures / "proposal-regulated.json").read_bytes())
    wide = Proposal.model_validate_json((fixtures / "proposal.json").read_bytes())
    wide = wide.model_copy(
        update={
            "proposal_id": "p-000125",
            "blast_radius": wide.blast_radius.model_copy(update={"replica_fraction": 0.4}),
            "summary": "checkout-api OOMKilled 6x in 10m on 40% of its pods; restart clears cache",
        }
    )
    # The strict example policy asks two people for a regulated action (approval.quorums).
    strict = read_policy(DEFAULT_POLICY.parent / "strict-regulated.yaml")
    first = decision_json(evaluate(regulated, context, strict))
    second = decision_json(evaluate(wide, context, policy))
    at = now.timestamp()
    one = track.on_decision(None, first, "C07PAYMENTS")
    two = track.on_decision(None, second, "C07SREAPPRV")
    assert one is not None  # noqa: S101 - the fixtures decide Level 2
    assert two is not None  # noqa: S101
    one = (
        track.on_audit(
            one,
            {
                "kind": "approval_recorded",
                "decision_id": first["decision_id"],
                "actor": "alice",
                "at": dt.datetime.fromtimestamp(at + 95, tz=dt.UTC).isoformat(),
                "data": {"user": "alice", "channel": "slack", "change_record": "CHG-2026-0042"},
            },
        )
        or one
    )
    for kind, data, after in (
        ("timeout_escalation", {"escalation": {"escalation_number": 1}}, 600),
        ("approval_accepted", {"user": "bob", "channel": "slack"}, 640),
        ("execute_command", {"command": "execute", "by": "bob"}, 641),
    ):
        two = (
            track.on_audit(
                two,
                {
                    "kind": kind,
                    "decision_id": second["decision_id"],
                    "actor": "bob",
                    "at": dt.datetime.fromtimestamp(at + after, tz=dt.UTC).isoformat(),
                    "data": data,
                },
            )
            or two
        )
    two = (
        track.on_outcome(
            two,
            {
                "result": "success",
                "verification": "passed",
                "at": dt.datetime.fromtimestamp(at + 700, tz=dt.UTC).isoformat(),
            },
        )
        or two
    )
    return page(
        [("21:40", blocks.message(one)[1], True), ("21:40", blocks.message(two)[1], True)],
        "sre-approvals",
    )


def main(argv: list[str]) -> None:
    out = Path(argv[1]) if len(argv) > 1 else Path("slack-preview.html")
    out.write_text(sample_page(), encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main(sys.argv)
