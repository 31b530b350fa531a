"""``escalation calibration [AI_SYSTEM]`` and ``escalation replay-trust``: the audit
trail read for what the gate can trust about each AI system (streams/review/trust.py)."""

from __future__ import annotations

from collections.abc import Iterator

import click

from streams.errors import InputError
from streams.policy.model import Policy
from streams.review.replay import Record
from streams.review.trust import TrustReport

_source = click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
_topic = click.option("--topic", "from_topic", is_flag=True, help="Read the audit topic.")
_policy = click.option(
    "--policy", "policy_file", default=None, help="Policy (default: ESCALATION_POLICY_FILE)."
)
_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _records(ctx: click.Context, file: str | None, from_topic: bool) -> Iterator[Record]:
    from streams.cli import settings_from  # noqa: PLC0415
    from streams.review.cli import _file_records, _topic_records  # noqa: PLC0415

    if from_topic == (file is not None):
        raise InputError("FILE", "give an audit export FILE or --topic (one of the two)")
    if from_topic:
        return _topic_records(settings_from(ctx))
    assert file is not None  # noqa: S101 - checked above
    return _file_records(file)


def _fold(
    ctx: click.Context, file: str | None, from_topic: bool, policy_file: str | None
) -> tuple[Policy, TrustReport]:
    from streams.cli import settings_from  # noqa: PLC0415
    from streams.files import read_policy  # noqa: PLC0415
    from streams.review.trust import fold_trust  # noqa: PLC0415

    policy = read_policy(policy_file or settings_from(ctx).policy_file)
    return policy, fold_trust(_records(ctx, file, from_topic), policy)


@click.command("calibration")
@click.argument("ai_system", required=False)
@click.option("--file", "file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="An audit export (JSON lines) instead of --topic.")  # fmt: skip
@_topic
@_policy
@_json
@click.pass_context
def calibration(  # noqa: PLR0917 - click passes the options positionally by name
    ctx: click.Context,
    ai_system: str | None,
    file: str | None,
    from_topic: bool,
    policy_file: str | None,
    as_json: bool,
) -> None:
    """The reliability table of each AI system (and model): reported confidence against
    how often its judged proposals were right, with ECE and Brier score."""
    import orjson  # noqa: PLC0415

    from streams.policy.calibration import brier_score, expected_calibration_error  # noqa: PLC0415

    policy, report = _fold(ctx, file, from_topic, policy_file)
    c = policy.calibration
    tables = {
        key: bins
        for key, bins in report.tables(policy).items()
        if ai_system is None or key.split("|", 1)[0] == ai_system
    }
    if as_json:
        whole = report.as_dict(policy)["calibration"]
        click.echo(orjson.dumps({k: whole[k] for k in tables}).decode())
        return
    if not tables:
        click.echo(f"no judged proposals{f' of {ai_system}' if ai_system else ''} in the trail")
        return
    for key, bins in tables.items():
        state = report.calibration[key]
        ece = expected_calibration_error(state, bins=c.bins)
        brier = brier_score(state, bins=c.bins)
        click.echo(f"{key}: ECE {ece}  Brier {brier}  (min sample per bin {c.min_samples})")
        click.echo("  reported      judged  right  accuracy  calibrated")
        for b in bins:
            if not b.count:
                continue
            shown = "-" if b.calibrated is None else f"{b.calibrated:.3f}"
            click.echo(
                f"  [{b.lower:.2f}, {b.upper:.2f})  {b.count:6d}  {b.right:5d}  "
                f"{b.accuracy or 0:8.3f}  {shown:>10}"
            )


@click.command("replay-trust")
@_source
@_topic
@_policy
@_json
@click.pass_context
def replay_trust(
    ctx: click.Context, file: str | None, from_topic: bool, policy_file: str | None, as_json: bool
) -> None:
    """What the similarity and calibration rules would have changed over a recorded stream."""
    policy, report = _fold(ctx, file, from_topic, policy_file)
    if as_json:
        click.echo(report.to_json(policy))
        return
    click.echo(
        f"{report.decisions} decisions, {report.judged} judged; "
        f"{len(report.changes)} would be lower "
        f"(similarity {report.by_rule['similarity']}, calibration {report.by_rule['calibration']})"
    )
    for change in report.changes:
        why = []
        if change.novelty is not None:
            nearest = change.novelty["nearest"]
            if nearest is None:
                why.append("novel: no known signature")
            else:
                why.append(
                    f"{change.novelty['kind']}: nearest {nearest['signature']['pattern']} "
                    f"({nearest['signature']['target_kind']}, "
                    f"{nearest['signature']['environment']}) differs in "
                    f"{', '.join(nearest['differs'])} at distance {nearest['distance']}"
                )
        if "calibration" in change.rules:
            why.append(f"confidence {change.reported} calibrated to {change.calibrated}")
        click.echo(
            f"  {change.decision_id} {change.pattern} {change.action_type}: "
            f"Level {change.old_level} -> {change.new_level}; {'; '.join(why)}"
        )
