# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Generate ``schemas/*.json``, the JSON Schema of every message, from the wire models.

``python -m streams.models.schema_gen [DIR]`` (default ``schemas``) writes one file
per entry of ``streams.models.MESSAGES``; ``--check`` only reports whether the files
are current (exit 1 when not), as CI and ``tests/unit/test_schemas.py`` do.
The output is deterministic: pretty JSON, sorted keys, a trailing newline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from streams.models import MESSAGES, SCHEMA_VERSION

if TYPE_CHECKING:
    from pydantic import BaseModel

#: ``$id`` of a schema is this prefix and the file stem: stable names, not URLs.
ID_PREFIX = f"urn:escalation-gate:schema:v{SCHEMA_VERSION}:"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def render_schemas() -> dict[str, str]:
    """File name (``proposal.json``) -> its text, for every message in ``MESSAGES``."""
    out: dict[str, str] = {}
    for stem, message in MESSAGES.items():
        # MESSAGES is inferred as dict[str, ModelMetaclass]; every value is a model class.
        model = cast("type[BaseModel]", message)
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = DIALECT
        schema["$id"] = ID_PREFIX + stem
        schema["title"] = model.__name__
        out[f"{stem}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def _ours(path: Path) -> bool:
    """Whether ``path`` is a schema this module generated (its ``$id`` says so)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and str(value.get("$id", "")).startswith(ID_PREFIX)


def stale_files(directory: Path) -> list[Path]:
    """Files in ``directory`` that differ from, are missing from, or are not in the render."""
    rendered = render_schemas()
    stale = [
        directory / name
        for name, text in rendered.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
    if directory.is_dir():
        stale += [
            path
            for path in sorted(directory.glob("*.json"))
            if path.name not in rendered and _ours(path)
        ]
    return stale


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; return the paths of the current schemas.

    A generated schema whose message no longer exists is removed; other files are
    left alone.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for path in directory.glob("*.json"):
        if path.name not in rendered and _ours(path):
            path.unlink()
    written = []
    for name, text in rendered.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: write (or ``--check``) the schemas in DIR."""
    parser = argparse.ArgumentParser(
        prog="python -m streams.models.schema_gen",
        description="Generate the JSON Schema of every message from the wire models.",
    )
    parser.add_argument("directory", nargs="?", type=Path, default=Path("schemas"))
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.directory)
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        if stale:
            print("run: python -m streams.models.schema_gen", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
