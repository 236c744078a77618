"""docs/SETTINGS.md's table is the one app/settings_doc.py renders from app/settings.py."""

import pytest

from app import settings_doc
from app.settings import Settings


def test_settings_page_matches_the_code():
    page = settings_doc.DOC.read_text()
    assert page == settings_doc.render(page), "docs/SETTINGS.md is out of date with app/settings.py: run make docs"


def test_every_setting_has_a_row_and_a_description():
    table = settings_doc.render_table()
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"| `VIT_DIGITS_{name.upper()}` |" in table


def test_check_fails_on_a_stale_page(tmp_path):
    page = tmp_path / "SETTINGS.md"
    page.write_text(f"# Settings\n\n{settings_doc.BEGIN}\n| stale |\n{settings_doc.END}\n")
    assert settings_doc.main(["--check", "--path", str(page)]) == 1
    assert settings_doc.main(["--path", str(page)]) == 0
    assert settings_doc.main(["--check", "--path", str(page)]) == 0
    assert "`VIT_DIGITS_DEVICE`" in page.read_text()


def test_a_page_without_markers_is_refused():
    with pytest.raises(ValueError, match="markers"):
        settings_doc.render("# Settings\n")
