"""The chat service's server-side SQL, one named file per function (see `load`)."""

from __future__ import annotations

from importlib import resources


def load(name: str) -> str:
    """The text of `<name>.sql` in this package."""
    return (resources.files(__name__) / f"{name}.sql").read_text(encoding="utf-8")
