"""docs/configuration.md's table is the settings object's: every setting described, and the
table regenerated whenever a setting, default or description changes."""

from __future__ import annotations

from pathlib import Path

from infra.settings import Settings, markdown_table, with_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_described() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_the_configuration_page_holds_the_current_table() -> None:
    text = DOC.read_text()
    assert text == with_table(text), "docs/configuration.md is stale: run `uv run python -m infra.settings`"
    assert markdown_table() in text


def test_a_changed_setting_makes_the_page_stale() -> None:
    edited = DOC.read_text().replace("`VTO_DATA_DIR` | `.vto`", "`VTO_DATA_DIR` | `elsewhere`")
    assert "`elsewhere`" in edited
    assert with_table(edited) != edited
