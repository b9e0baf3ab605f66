"""Where the `local` target puts things, and which names and paths may go there. No I/O.

Layout under the deploy root::

    .staging/<random>/                    a version being written (same filesystem as apps/)
    apps/<app_id>/versions/<version_id>/  one directory per published version, never rewritten
    apps/<app_id>/current -> versions/<version_id>
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from appforge.services.deployer.targets.base import ArtifactFile, PublishError

STAGING_DIR = ".staging"
APPS_DIR = "apps"
VERSIONS_DIR = "versions"
CURRENT_LINK = "current"
TMP_LINK_PREFIX = "current.tmp-"
NAME_MAX = 255  # bytes in one path component on the usual filesystems


def id_problem(value: str) -> str | None:
    """Why `value` is not a safe single path component (an app or version id), or None."""
    if not value:
        return "is empty"
    if not value.isprintable():
        return "contains unprintable characters"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if value in (".", ".."):
        return "is a dot segment"
    if len(value.encode()) > NAME_MAX:
        return "is too long"
    return None


def path_problem(path: str) -> str | None:
    """Why `path` is not a relative, normalised file path inside a version, or None."""
    if not path:
        return "is empty"
    if not path.isprintable():  # NUL and every other control character included
        return "contains unprintable characters"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/"):
        return "is absolute"
    parts = path.split("/")
    if ".." in parts or "." in parts:
        return "has a dot segment"
    if posixpath.normpath(path) != path:
        return "is not normalised"
    if any(len(part.encode()) > NAME_MAX for part in parts):
        return "has a component that is too long"
    return None


def _invalid(message: str) -> PublishError:
    return PublishError(message, retryable=False)


def validate_publication(app_id: str, app_version_id: str, files: Sequence[ArtifactFile]) -> None:
    """Refuse, before anything touches the disk, what could write outside the version dir."""
    for field, value in (("app_id", app_id), ("app_version_id", app_version_id)):
        if (problem := id_problem(value)) is not None:
            raise _invalid(f"{field} {value!r} {problem}")
    if not files:
        raise _invalid("a version needs at least one file")
    paths: set[str] = set()
    for file in files:
        if (problem := path_problem(file.path)) is not None:
            raise _invalid(f"file path {file.path!r} {problem}")
        if file.path in paths:
            raise _invalid(f"file path {file.path!r} appears twice")
        paths.add(file.path)
    for path in paths:
        parent = posixpath.dirname(path)
        while parent:
            if parent in paths:
                raise _invalid(f"file path {path!r} lies under the file {parent!r}")
            parent = posixpath.dirname(parent)
