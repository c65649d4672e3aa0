"""The documentation site stays true to the code: every setting documented, every promise's test real."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from app.api.reference import markdown
from app.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_configuration_page_lists_every_setting_and_no_other() -> None:
    documented = set(re.findall(r"GENSERVE_[A-Z0-9_]+", (DOCS / "configuration.md").read_text()))
    settings = {f"GENSERVE_{name.upper()}" for name in Settings.model_fields}

    assert sorted(settings - documented) == [], "settings missing from docs/configuration.md"
    assert sorted(documented - settings) == [], "docs/configuration.md names settings that do not exist"


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test")
    }


def test_every_guarantee_names_tests_that_exist() -> None:
    rows = [line for line in (DOCS / "guarantees.md").read_text().splitlines() if line.startswith("| ")][2:]
    missing = []
    for row in rows:
        proof = row.rstrip(" |").rsplit(" | ", 1)[-1]
        references = [found for found in re.findall(r"`(tests/[\w/]+\.py)?(?:::(\w+))?", proof) if any(found)]
        assert references, f"a guarantee without a test: {row[:80]}"
        current: Path | None = None
        for file, test in references:
            if file:
                current = ROOT / file
                if not current.is_file():
                    missing.append(file)
                    continue
            if test and (current is None or test not in _test_names(current)):
                missing.append(f"{current}::{test}")

    assert missing == []


def test_the_api_page_is_written_from_the_services_schema() -> None:
    schema = create_app(Settings(model_store=Path("model_store"))).openapi()

    assert (DOCS / "api.md").read_text() == markdown(schema), "run: python -m app.api.reference > docs/api.md"
