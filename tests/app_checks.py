"""Checks of generated apps shared by the suites: strict HTML parsing, and Node.js."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

VOID_TAGS = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }
)


class StrictHTML(HTMLParser):
    """Records tags and flags every non-void element not closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.start_tags: list[tuple[str, dict[str, str | None]]] = []
        self.doctype = False
        self.text_by_tag: dict[str, list[str]] = {}

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start_tags.append((tag, dict(attrs)))
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start_tags.append((tag, dict(attrs)))
        if tag not in VOID_TAGS:
            self.errors.append(f"self-closing non-void <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS:
            self.errors.append(f"end tag of void element </{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> while open: {self.stack}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.text_by_tag.setdefault(self.stack[-1], []).append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.start_tags if tag == name]


def parse_html(document: str) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(document)
    parser.close()
    assert parser.errors == []
    assert parser.stack == [], f"unclosed elements: {parser.stack}"
    return parser


def run_node(script: str, *args: str) -> Any:
    """Runs `script` with `node -e` and decodes the JSON it prints."""
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("CI=true and `node` is not on PATH: the app.js tests need Node.js")
        pytest.skip("`node` is not on PATH")
    completed = subprocess.run(
        [node, "-e", script, *args], timeout=30, check=True, capture_output=True, text=True
    )
    return json.loads(completed.stdout)
