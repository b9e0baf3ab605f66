"""The static apps the scripted model writes, loaded from the folders beside this module.

Each kind of app is one folder here (`calculator/`, `todo/`, `counter/`, `notes/`, `plain/`)
holding its three files: `index.html` and `app.js` as the sandbox receives them, and the
styles of that app alone; every app's `styles.css` is `base.css` (the look they share)
followed by its folder's `styles.css`. Each `app.js` can be `require`d under Node as it is.
They ship as package data and are read through `importlib.resources`, as bytes decoded as
UTF-8, so nothing translates their newlines.

Every app works offline (no CDN), never runs user input as code, writes user text only
through `textContent`, and its `app.js` touches `document` only when there is one, so the
pure logic it exports through `module.exports` can be tested under Node.

Substitution: only `plain/index.html` has placeholders, filled by `string.Template`
(`substitute`, so a missing or unknown placeholder raises) with two values, both
HTML-escaped first:

    $title    the prompt with its whitespace collapsed, cut to 60 characters
    $heading  the whole prompt with its whitespace collapsed

Every other file is written exactly as stored; a `$` in it means nothing.
"""

from __future__ import annotations

import dataclasses
import html
import string
from dataclasses import dataclass
from importlib import resources
from typing import Final

INDEX_HTML: Final = "index.html"
STYLES_CSS: Final = "styles.css"
APP_JS: Final = "app.js"

_TITLE_LIMIT: Final = 60


@dataclass(frozen=True, kw_only=True)
class AppFiles:
    """The three files of one static app."""

    index_html: str
    styles_css: str
    app_js: str


def _read(*parts: str) -> str:
    path = resources.files(__name__).joinpath(*parts)
    return path.read_bytes().decode("utf-8")


BASE_CSS: Final = _read("base.css")


def load(folder: str) -> AppFiles:
    """The three files of the template folder `folder`: stored, but for the shared styles
    that start every `styles.css`."""
    return AppFiles(
        index_html=_read(folder, INDEX_HTML),
        styles_css=BASE_CSS + _read(folder, STYLES_CSS),
        app_js=_read(folder, APP_JS),
    )


# Read once, on import: an install that lost its package data fails when the builder
# loads its models, not halfway through somebody's build.
CALCULATOR: Final = load("calculator")
TODO: Final = load("todo")
COUNTER: Final = load("counter")
NOTES: Final = load("notes")
_PLAIN: Final = load("plain")
_PLAIN_INDEX: Final = string.Template(_PLAIN.index_html)


def plain_page(prompt: str) -> AppFiles:
    """A simple page whose heading is the prompt, HTML-escaped; the prompt never reaches JS."""
    text = " ".join(prompt.split()) or "Your app"
    title = text if len(text) <= _TITLE_LIMIT else text[: _TITLE_LIMIT - 3].rstrip() + "..."
    index_html = _PLAIN_INDEX.substitute(title=html.escape(title), heading=html.escape(text))
    return dataclasses.replace(_PLAIN, index_html=index_html)
