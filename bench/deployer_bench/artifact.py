"""The static app every deployment carries: in `local` mode `--files` files of 1-4 KiB, the
same for every deployment but its `index.html`, which names its version; in `noop` mode that
`index.html` alone, a few bytes (the noop target publishes nothing, so the queue is what
is measured)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from appforge.api.flow.v1 import flow_pb2


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """The files every deployment carries; only `index.html` differs, naming its version."""

    shared: list[flow_pb2.File]
    index_template: str

    def files(self, version_id: str) -> list[flow_pb2.File]:
        index = self.index_template.replace("@VERSION@", version_id)
        return [flow_pb2.File(path="index.html", content=index.encode()), *self.shared]

    @property
    def paths(self) -> set[str]:
        return {"index.html", *(f.path for f in self.shared)}


def _filler(rng: random.Random, size: int, line: str) -> str:
    words = "const form validate email signup button state render props value".split()
    out: list[str] = []
    length = 0
    while length < size:
        text = line.format(word=rng.choice(words), n=rng.randrange(10_000))
        out.append(text)
        length += len(text) + 1
    return "\n".join(out)[:size]


def build_artifact(files: int, rng: random.Random) -> Artifact:
    """A static app of `files` files, 1-4 KiB each: index.html, scripts, styles, SVGs."""
    kinds = [
        ("assets/app-{i}.js", "export const {word}{n} = () => {word}({n});"),
        ("assets/style-{i}.css", ".{word}-{n} {{ margin: {n}px; color: #{n}; }}"),
        ("assets/icon-{i}.svg", '<path d="M{n} {n}L{n} {n}" id="{word}"/>'),
        ("assets/data-{i}.json", '{{"{word}": {n}}},'),
    ]
    shared = []
    for i in range(files - 1):
        pattern, line = kinds[i % len(kinds)]
        path = "manifest.webmanifest" if i == files - 2 and files > 2 else pattern.format(i=i)
        content = _filler(rng, rng.randint(1024, 4096), line)
        shared.append(flow_pb2.File(path=path, content=content.encode()))
    scripts = "".join(
        f'<script type="module" src="/{f.path}"></script>' for f in shared if f.path.endswith(".js")
    )
    head = '<!doctype html><html><head><meta charset="utf-8"><title>@VERSION@</title>'
    body = "</head><body><div id=root data-version=@VERSION@></div>"
    padding = f"<!-- {_filler(rng, rng.randint(1024, 3072), '{word} {n}')} -->"
    return Artifact(shared=shared, index_template=head + scripts + body + padding + "</body>")


def minimal_artifact() -> Artifact:
    """The one-file app of `noop` mode: an `index.html` of a few bytes naming its version."""
    return Artifact(shared=[], index_template="<!doctype html><p data-version=@VERSION@>")
