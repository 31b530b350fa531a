"""The Slack mapping files: valid files load; every problem names file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.slack.config import (
    SlackConfigError,
    parse_channels,
    parse_users,
    read_channels,
    read_users,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_mapping_files_are_valid() -> None:
    users = read_users(ROOT / "deploy" / "slack" / "users.yaml")
    channels = read_channels(ROOT / "deploy" / "slack" / "channels.yaml")
    assert users.person("U07ALICE01") == "alice"
    assert users.person("U07NOTLISTED") is None
    assert channels.channel("payments-api") == "C07PAYMENTS"
    assert channels.channel("anything-else") == channels.default


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("users:\n  alice: alice\n", "users.yaml:2: users.alice is not a Slack user id"),
        ("users:\n  U0ABC: [x]\n", "users.yaml:2: users.U0ABC must name a person"),
        ("users:\n  U0ABC: 'has space'\n", "users.yaml:2: users.U0ABC must name a person"),
        ("users: [U0ABC]\n", "users.yaml:1: users must be a mapping"),
        ("people: {}\nusers: {}\n", "users.yaml:1: people is not a known key"),
        ("users:\n  U0ABC: a\n  U0ABC: b\n", "users.yaml:3: users.U0ABC is defined twice"),
        ("users: {U0ABC: a\n", "users.yaml:2: not valid YAML"),
        ("- a\n", "users.yaml:1: must be a mapping, got list"),
    ],
)
def test_a_bad_users_file_names_line_and_field(text: str, problem: str) -> None:
    with pytest.raises(SlackConfigError) as info:
        parse_users(text)
    assert any(line.startswith(problem) for line in info.value.problems), info.value.problems


def test_a_person_missing_from_the_keyring_is_refused() -> None:
    with pytest.raises(SlackConfigError, match=r"users.yaml:3: users.U0BBB: 'mallory' is not"):
        parse_users("users:\n  U0AAA: alice\n  U0BBB: mallory\n", people={"alice", "bob"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("services: {}\n", "channels.yaml:1: default must be a Slack channel id"),
        ("default: '#sre'\n", "channels.yaml:1: default must be a Slack channel id"),
        (
            "default: C0AAA\nservices:\n  api: sre\n",
            "channels.yaml:3: services.api must be a Slack channel id",
        ),
        ("default: C0AAA\nservices: [a]\n", "channels.yaml:2: services must be a mapping"),
        ("default: C0AAA\nchannel: C0BBB\n", "channels.yaml:2: channel is not a known key"),
    ],
)
def test_a_bad_channels_file_names_line_and_field(text: str, problem: str) -> None:
    with pytest.raises(SlackConfigError) as info:
        parse_channels(text)
    assert any(line.startswith(problem) for line in info.value.problems), info.value.problems


def test_an_unreadable_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SlackConfigError, match=r"missing\.yaml: cannot read"):
        read_users(tmp_path / "missing.yaml")


def test_slack_check_validates_the_files_against_the_keyring(tmp_path: Path) -> None:
    """``escalation slack --check``: one line per problem naming file:line, exit 2."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    users = tmp_path / "users.yaml"
    users.write_text("users:\n  U0AAA: alice\n  U0BBB: mallory\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "ESCALATION_DEV": "1",  # the development keyring: the default policy's people
        "ESCALATION_DATA_DIR": str(tmp_path / "data"),
        "ESCALATION_SLACK_USERS_FILE": str(users),
        "ESCALATION_SLACK_CHANNELS_FILE": str(ROOT / "deploy" / "slack" / "channels.yaml"),
    }
    command = [sys.executable, "-m", "streams.cli", "slack", "--check"]
    bad = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"escalation: error: {users}:3: users.U0BBB: 'mallory' is not a person of the keyring"
    ]
    users.write_text("users:\n  U0AAA: alice\n")
    good = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    assert good.returncode == 0, good.stderr
    assert "(all people of keyring dev)" in good.stdout


def test_the_service_refuses_a_key_that_is_not_a_channel_of_the_keyring(tmp_path: Path) -> None:
    from streams import keys  # noqa: PLC0415
    from streams.errors import KeyFileError  # noqa: PLC0415
    from streams.settings import Settings  # noqa: PLC0415
    from streams.slack.cli import _signer  # noqa: PLC0415

    path = tmp_path / "slack.key"
    keys.write_private(keys.generate("slack"), path)
    settings = Settings(slack_key_file=path, data_dir=tmp_path)

    class Keyring:
        def __init__(self, kind: str | None) -> None:
            self.kind = kind

        def holder(self, _key_id: str) -> object | None:
            return None if self.kind is None else type("H", (), {"kind": self.kind})()

    with pytest.raises(KeyFileError, match="is not a channel of the keyring"):
        _signer(settings, Keyring(None))
    with pytest.raises(KeyFileError, match="is not a channel of the keyring"):
        _signer(settings, Keyring("person"))  # a person's key is not the bridge's
    assert _signer(settings, Keyring("channel")).name == "slack"
    unset = Settings(data_dir=tmp_path, slack_key_file=None, dev=False)
    with pytest.raises(KeyFileError, match="ESCALATION_SLACK_KEY_FILE is not set"):
        _signer(unset, Keyring("channel"))
