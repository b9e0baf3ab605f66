"""Relative file paths that cannot escape the directory they are meant for. No I/O."""

from __future__ import annotations

import posixpath

from appforge.services.common.errors import InvalidArgument


def safe_relative_path(
    path: str, field_name: str, *, max_length: int, max_component: int = 255
) -> str:
    """`path` normalised (posix, relative, inside its root), or InvalidArgument naming the field.

    Refuses empty, absolute, `..`, backslash, NUL and non-printable paths, and paths that
    normalise to the root itself.
    """
    if not path:
        raise InvalidArgument("must not be empty", field=field_name)
    if len(path) > max_length:
        raise InvalidArgument(f"must be at most {max_length} characters", field=field_name)
    if "\\" in path or "\x00" in path or not path.isprintable():
        raise InvalidArgument("must be a printable posix path", field=field_name)
    if path.startswith("/"):
        raise InvalidArgument("must be relative, not absolute", field=field_name)
    if ".." in path.split("/"):
        raise InvalidArgument("must not contain '..'", field=field_name)
    normal = posixpath.normpath(path)
    if normal in (".", "") or normal.startswith("../"):
        raise InvalidArgument("must name a file inside the app", field=field_name)
    if any(len(part.encode()) > max_component for part in normal.split("/")):
        raise InvalidArgument(f"has a path component over {max_component} bytes", field=field_name)
    return normal
