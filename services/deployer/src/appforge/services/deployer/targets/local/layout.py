"""Where the `local` target puts things, and which names and paths may go there. No I/O.

Layout under the deploy root::

    .staging/<random>/                    a version being written (same filesystem as apps/)
    apps/<app_id>/versions/<version_id>/  one directory per published version, never rewritten
    apps/<app_id>/current -> versions/<version_id>
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from appforge.services.common.paths import component_problem, path_problem
from appforge.services.deployer.targets.base import ArtifactFile, PublishError

STAGING_DIR = ".staging"
APPS_DIR = "apps"
VERSIONS_DIR = "versions"
CURRENT_LINK = "current"
TMP_LINK_PREFIX = "current.tmp-"


def _invalid(message: str) -> PublishError:
    return PublishError(message, retryable=False)


def validate_publication(app_id: str, app_version_id: str, files: Sequence[ArtifactFile]) -> None:
    """Refuse, before anything touches the disk, what could write outside the version dir."""
    for field, value in (("app_id", app_id), ("app_version_id", app_version_id)):
        if (problem := component_problem(value)) is not None:
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
