"""The pages the scripted model writes: its template folders byte for byte and shipped as
package data, well-formed and labelled HTML, self-contained files that never run input as
code, and the plain page's escaping of the prompt."""

from __future__ import annotations

import fnmatch
import html
import re
import string
import tomllib
from pathlib import Path

import pytest

from appforge.services.builder.models.scripted import AppKind, ScriptedModel
from tests.app_checks import parse_html
from tests.unit.scripted_model_helpers import APP_FILES, PROMPTS, XSS_PROMPT, app_files_for

REPO = Path(__file__).resolve().parents[2]
BUILDER_PYPROJECT = REPO / "services" / "builder" / "pyproject.toml"
# The source tree's copy, read with pathlib: the model loads its own through importlib.resources.
TEMPLATES = BUILDER_PYPROJECT.parent / "src/appforge/services/builder/models/templates"

FORBIDDEN_JS = (
    re.compile(r"\beval\s*\("),
    re.compile(r"\bnew\s+Function\b"),
    re.compile(r"\bFunction\s*\("),
    re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write"),
)


def stored_templates() -> dict[str, dict[str, bytes]]:
    """Every template folder in the source tree, by name, with its files' bytes (each
    folder's styles.css holds what follows the shared base.css)."""
    return {
        folder.name: {file.name: file.read_bytes() for file in folder.iterdir()}
        for folder in TEMPLATES.iterdir()
        if folder.is_dir() and not folder.name.startswith("__")
    }


def test_template_folders_are_the_app_kinds_and_all_ship_as_package_data() -> None:
    pyproject = tomllib.loads(BUILDER_PYPROJECT.read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["*"]
    stored = stored_templates()

    assert stored.keys() == {kind.value for kind in AppKind}
    assert any(fnmatch.fnmatch("base.css", glob) for glob in globs)
    for folder, files in stored.items():
        assert files.keys() == APP_FILES, folder
        for name in files:
            assert any(fnmatch.fnmatch(name, glob) for glob in globs), (folder, name, globs)


@pytest.mark.parametrize("kind", list(AppKind))
def test_the_model_writes_its_template_folder_byte_for_byte(kind: AppKind) -> None:
    expected = stored_templates()[kind.value]
    expected["styles.css"] = (TEMPLATES / "base.css").read_bytes() + expected["styles.css"]
    if kind is AppKind.PLAIN:
        page = string.Template(expected["index.html"].decode("utf-8"))
        escaped = html.escape(PROMPTS[kind])
        expected["index.html"] = page.substitute(title=escaped, heading=escaped).encode("utf-8")

    written = {path: content.encode("utf-8") for path, content in app_files_for(kind).items()}

    assert written == expected


@pytest.mark.parametrize("kind", list(AppKind))
def test_index_html_is_well_formed_and_links_its_files(kind: AppKind) -> None:
    files = app_files_for(kind)
    parser = parse_html(files["index.html"])

    assert parser.doctype
    assert parser.tags("html") == [{"lang": "en"}]
    assert "".join(parser.text_by_tag.get("title", [])).strip()
    assert {"rel": "stylesheet", "href": "styles.css"} in parser.tags("link")
    assert [attrs.get("src") for attrs in parser.tags("script")] == ["app.js"]
    assert parser.tags("h1")


@pytest.mark.parametrize("kind", list(AppKind))
def test_controls_are_labelled(kind: AppKind) -> None:
    parser = parse_html(app_files_for(kind)["index.html"])

    labelled = {attrs.get("for") for attrs in parser.tags("label")}
    for attrs in parser.tags("input") + parser.tags("textarea"):
        assert attrs.get("id") in labelled or attrs.get("aria-label"), attrs
    for attrs in parser.tags("button"):
        assert attrs.get("type") in ("button", "submit"), attrs
    assert parser.text_by_tag.get("button") or all(
        attrs.get("aria-label") for attrs in parser.tags("button")
    )


@pytest.mark.parametrize("kind", list(AppKind))
def test_apps_are_self_contained_and_never_run_input_as_code(kind: AppKind) -> None:
    files = app_files_for(kind)

    assert files.keys() == APP_FILES
    for name, content in files.items():
        assert "http://" not in content and "https://" not in content and "//cdn" not in content
        assert "@import" not in content, name
    for pattern in FORBIDDEN_JS:
        assert not pattern.search(files["app.js"]), pattern.pattern
    assert 'if (typeof module !== "undefined")' in files["app.js"]
    assert 'if (typeof document !== "undefined")' in files["app.js"]


def test_plain_page_escapes_the_prompt() -> None:
    files = app_files_for(AppKind.PLAIN)
    parser = parse_html(files["index.html"])

    assert "<script>alert" not in files["index.html"]
    assert html.escape(XSS_PROMPT) in files["index.html"]
    assert "".join(parser.text_by_tag["h1"]) == XSS_PROMPT
    assert "".join(parser.text_by_tag["title"]) == XSS_PROMPT
    assert [attrs.get("src") for attrs in parser.tags("script")] == ["app.js"]
    assert "alert" not in files["app.js"] and "alert" not in files["styles.css"]


def test_plain_page_shortens_a_long_title_but_keeps_the_whole_heading() -> None:
    prompt = "a page about " + "very " * 40 + "long <things>"
    turn = ScriptedModel().turn(prompt, [])
    parser = parse_html(turn.tool_calls[0].arguments["content"])

    title = "".join(parser.text_by_tag["title"])
    assert len(title) <= 60 and title.endswith("...")
    assert "".join(parser.text_by_tag["h1"]) == " ".join(prompt.split())
