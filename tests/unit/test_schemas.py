# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""schemas/*.json are generated from the models and must not drift from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.models import MESSAGES, Context, Proposal, decode
from streams.models.schema_gen import ID_PREFIX, main, render_schemas, stale_files, write_schemas

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
FIXTURES = ROOT / "tests" / "fixtures"
REGENERATE = "run `python -m streams.models.schema_gen` and commit schemas/"


def test_schema_files_match_the_models() -> None:
    rendered = render_schemas()
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in SCHEMAS.glob("*.json")}

    missing = sorted(set(rendered) - set(on_disk))
    extra = sorted(set(on_disk) - set(rendered))
    changed = sorted(
        name for name in set(rendered) & set(on_disk) if on_disk[name] != rendered[name]
    )

    assert not missing, f"schemas missing: {missing}; {REGENERATE}"
    assert not extra, f"schemas with no message in streams.models.MESSAGES: {extra}; {REGENERATE}"
    assert not changed, f"schemas out of date with the models: {changed}; {REGENERATE}"


def test_every_message_has_one_schema_with_its_id_and_title() -> None:
    rendered = render_schemas()

    assert sorted(rendered) == sorted(f"{stem}.json" for stem in MESSAGES)
    for stem, model in MESSAGES.items():
        text = rendered[f"{stem}.json"]
        schema = json.loads(text)
        assert schema["$id"] == ID_PREFIX + stem
        assert schema["title"] == model.__name__
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["additionalProperties"] is False
        assert text.endswith("}\n")
        assert text == json.dumps(schema, indent=2, sort_keys=True) + "\n"


def test_rendering_is_deterministic() -> None:
    assert render_schemas() == render_schemas()


def test_write_schemas_writes_what_render_returns(tmp_path: Path) -> None:
    written = write_schemas(tmp_path / "out")

    assert sorted(p.name for p in written) == sorted(render_schemas())
    assert stale_files(tmp_path / "out") == []
    for path in written:
        assert path.read_text(encoding="utf-8") == render_schemas()[path.name]


def test_write_schemas_replaces_drifted_and_removes_retired_schemas(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    (tmp_path / "proposal.json").write_text("{}\n", encoding="utf-8")
    retired = tmp_path / "retired-message.json"
    retired.write_text(json.dumps({"$id": ID_PREFIX + "retired-message"}), encoding="utf-8")
    unrelated = tmp_path / "notes.json"
    unrelated.write_text('{"keep": true}', encoding="utf-8")

    assert set(stale_files(tmp_path)) == {tmp_path / "proposal.json", retired}
    write_schemas(tmp_path)

    assert stale_files(tmp_path) == []
    assert not retired.exists()
    assert unrelated.exists()


def test_check_mode_fails_on_a_stale_directory_and_says_how_to_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check", str(tmp_path)]) == 1
    assert "python -m streams.models.schema_gen" in capsys.readouterr().err

    assert main([str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0


@pytest.mark.parametrize("name", ["proposal.json", "proposal-regulated.json"])
def test_sample_proposal_fixture_decodes(name: str) -> None:
    proposal = decode(Proposal, (FIXTURES / name).read_bytes())

    assert proposal.schema_version == 1


@pytest.mark.parametrize("name", ["context.json", "context-novel.json"])
def test_sample_context_fixture_decodes(name: str) -> None:
    context = decode(Context, (FIXTURES / name).read_bytes())

    assert context.now.tzinfo is not None
