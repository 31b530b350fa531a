"""Local console accounts: argon2 hashes in a 0600 file, and `escalation console add-user`."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from streams.console.auth import Accounts, AccountsError, AccountsFile, add_user
from streams.errors import InputError


def test_an_account_is_an_argon2_hash_in_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    path = tmp_path / "accounts"
    add_user(path, "alice", "correct horse battery")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "correct horse" not in path.read_text()
    assert "alice:$argon2id$" in path.read_text()
    accounts = Accounts.load(path)
    assert accounts.check("alice", "correct horse battery")
    assert not accounts.check("alice", "correct horse batterz")
    assert not accounts.check("bob", "correct horse battery")


def test_an_existing_account_is_replaced_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "accounts"
    add_user(path, "alice", "first password")
    with pytest.raises(InputError, match="already has an account"):
        add_user(path, "alice", "second password")
    add_user(path, "alice", "second password", replace=True)
    assert Accounts.load(path).check("alice", "second password")


@pytest.mark.parametrize(("name", "password", "field"), [
    ("al ice", "long enough", "NAME"), ("", "long enough", "NAME"), ("alice", "short", "password"),
])  # fmt: skip
def test_bad_names_and_short_passwords_are_refused(
    tmp_path: Path, name: str, password: str, field: str
) -> None:
    with pytest.raises(InputError) as raised:
        add_user(tmp_path / "accounts", name, password)
    assert raised.value.field == field


def test_a_damaged_accounts_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "accounts"
    path.write_text("# comment\nalice:plaintext\n")
    with pytest.raises(AccountsError, match=r"accounts:2: expected name:\$argon2id"):
        Accounts.load(path)


def test_add_user_command_reads_the_password_from_stdin(tmp_path: Path) -> None:
    path = tmp_path / "accounts"
    command = [sys.executable, "-m", "streams.cli", "console", "add-user", "--accounts-file",
               str(path), "--password-stdin"]  # fmt: skip
    ok = subprocess.run([*command, "alice"], input="correct horse battery\n", text=True,
                        capture_output=True, check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert Accounts.load(path).check("alice", "correct horse battery")
    bad = subprocess.run([*command, "bad name"], input="correct horse battery\n", text=True,
                         capture_output=True, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("escalation: error: NAME:")


def test_a_running_console_sees_accounts_added_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "accounts"
    accounts = AccountsFile(path)
    assert accounts.hashes == {}
    add_user(path, "alice", "correct horse battery")
    assert accounts.check("alice", "correct horse battery")
    path.write_text("# nobody\n")
    assert "alice" not in accounts.hashes
