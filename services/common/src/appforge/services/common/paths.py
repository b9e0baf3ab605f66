"""Relative file paths that cannot escape the directory they are meant for. No I/O.

One rule for every edge: the services refuse a bad path a client sent (`safe_relative_path`,
as InvalidArgument naming the field) and the deploy targets refuse one before it touches a
disk or a bucket (`path_problem`, `component_problem`), with the same reasons.
"""

from __future__ import annotations

import posixpath
from typing import Final

from appforge.services.common.errors import InvalidArgument

NAME_MAX: Final = 255  # bytes in one path component on the usual filesystems


def path_problem(
    path: str, *, normalised: bool = True, max_component: int = NAME_MAX
) -> str | None:
    """Why `path` cannot name a file inside its root, or None.

    Refuses empty, unprintable (NUL included), backslashed and absolute paths, `..`
    segments, and components over `max_component` bytes; with `normalised`, also any path
    that is not already in normal form (`.` segments, empty segments, a trailing `/`).
    """
    if not path:
        return "is empty"
    if not path.isprintable():
        return "contains unprintable characters"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/"):
        return "is absolute"
    parts = path.split("/")
    if ".." in parts:
        return "contains a '..' segment"
    if normalised and ("." in parts or posixpath.normpath(path) != path):
        return "is not normalised"
    if any(len(part.encode()) > max_component for part in parts):
        return f"has a path component over {max_component} bytes"
    return None


def component_problem(value: str) -> str | None:
    """Why `value` cannot be one path component (an id used as a directory name), or None."""
    if "/" in value:
        return "contains a path separator"
    if value in (".", ".."):
        return "is a dot segment"
    return path_problem(value)


def safe_relative_path(
    path: str, field_name: str, *, max_length: int, max_component: int = NAME_MAX
) -> str:
    """`path` normalised (posix, relative, inside its root), or InvalidArgument naming the field.

    What a client may write loosely (`./a`, `a//b`) is normalised; what could never name a
    file inside the root is refused as sent, before normalising could hide it (`a/../b`).
    """
    if len(path) > max_length:
        raise InvalidArgument(f"must be at most {max_length} characters", field=field_name)
    problem = path_problem(path, normalised=False, max_component=max_component)
    if problem is not None:
        raise InvalidArgument(problem, field=field_name)
    normal = posixpath.normpath(path)
    if normal == ".":
        raise InvalidArgument("must name a file inside its root, not the root", field=field_name)
    return normal
